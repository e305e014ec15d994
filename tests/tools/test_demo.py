"""``qproxy demo`` runs end to end, and cleans up after itself even when interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra", [[], ["--refagent"]], ids=["qemu-ga", "refagent"])
def test_demo_runs_end_to_end(workdir: Path, extra: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "qproxy", "demo", *extra],
                            capture_output=True, text=True, timeout=50, env=_env(workdir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "Every client got exactly its own replies, in order." in out
    assert ("qemu-ga (" in out) if not extra else ("the reference agent" in out)
    for client in ("qemu-ga-client style", "libvirt style", "Python API", "command line"):
        assert f"ok   {client}" in out.replace("raw socket, ", ""), out
    assert list(workdir.iterdir()) == [], "the demo left files behind"
    assert _processes_mentioning(str(workdir)) == []


@pytest.mark.timeout(60)
def test_demo_cleans_up_on_ctrl_c(workdir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "qproxy", "demo", "--calls", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(workdir))
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    while "running every client" not in line:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, "the demo did not get going"
    time.sleep(0.3)
    assert _processes_mentioning(str(workdir)), "expected the agent and server to be running"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(workdir)) == []
    assert list(workdir.iterdir()) == []
