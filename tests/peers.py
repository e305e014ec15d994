"""Real peers for the tests: qemu-ga and the reference agent as processes.

Every helper here starts a process, waits until it answers, and stops it.  A peer that
cannot start makes the test fail loudly (never skip): a missing qemu-ga is a set-up
error that ``make test`` should have fixed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Commands a qemu-ga on the test machine must never run (it runs as root here).
BLOCKED_RPCS = ",".join([
    "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid",
    "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw",
    "guest-set-time", "guest-set-user-password", "guest-set-vcpus",
    "guest-set-memory-blocks",
])


def qemu_ga_binary() -> str:
    """Path of qemu-ga; fails the test if it is not installed."""
    path = shutil.which("qemu-ga") or ("/usr/sbin/qemu-ga" if os.path.exists("/usr/sbin/qemu-ga")
                                       else None)
    if path is None:
        pytest.fail("qemu-ga is not installed (Debian package qemu-guest-agent); "
                    "'make test' installs it when run as root", pytrace=False)
    return path


def wait_for_unix_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Wait until something accepts connections on ``path``; fail if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}: {out}", pytrace=False)
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.02)
    pytest.fail(f"{proc.args[0]} did not listen on {path} within {timeout} s", pytrace=False)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@contextlib.contextmanager
def qemu_ga(workdir: Path, method: str = "unix-listen", path: Path | None = None,
            wait: bool = True) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run a real qemu-ga (``-m method -p path``) with dangerous commands blocked."""
    statedir = workdir / "qga-state"
    statedir.mkdir(exist_ok=True)
    sock = path or (workdir / "qga.sock")
    proc = subprocess.Popen(
        [qemu_ga_binary(), "-m", method, "-p", str(sock), "-t", str(statedir),
         "-f", str(statedir / "qemu-ga.pid"), "--block-rpcs", BLOCKED_RPCS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if wait and method == "unix-listen":
            wait_for_unix_socket(sock, proc)
        yield proc, sock
    finally:
        stop_process(proc)


@contextlib.contextmanager
def reference_agent(workdir: Path, *extra_args: str,
                    name: str = "ref.sock") -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``qproxy agent`` as its own process on a Unix socket."""
    sock = workdir / name
    proc = subprocess.Popen([sys.executable, "-m", "qproxy", "agent", "--listen", f"unix:{sock}",
                             *extra_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_unix_socket(sock, proc)
        yield proc, sock
    finally:
        stop_process(proc)
