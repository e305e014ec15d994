"""``qproxy agent``: the reference agent as a process, on TCP and Unix sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import qproxy
from peers import reference_agent, stop_process


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.timeout(30)
def test_listens_on_tcp_loopback() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "qproxy", "agent", "--listen",
                             f"tcp:127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        agent = qproxy.connect(f"tcp:127.0.0.1:{port}", wait=True, timeout=15)
        with agent:
            assert agent.call("qproxy-echo", {"over": "tcp"}) == {"over": "tcp"}
            names = {c["name"] for c in agent.info()["supported_commands"]}
            assert {"guest-ping", "guest-sync-delimited", "qproxy-sleep"} <= names
    finally:
        stop_process(proc)


@pytest.mark.timeout(30)
def test_no_echo_ids_plays_an_old_agent(workdir: Path) -> None:
    with reference_agent(workdir, "--no-echo-ids") as (_, sock), \
            socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(str(sock))
        raw.sendall(b'{"execute": "guest-ping", "id": 42}\n')
        line = b""
        while not line.endswith(b"\n"):
            line += raw.recv(4096)
        assert json.loads(line) == {"return": {}}  # no id: as agents before 2012


@pytest.mark.timeout(30)
def test_a_bad_listen_address_is_one_clear_line(workdir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "qproxy", "agent", "--listen",
                             "carrier-pigeon:coop"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qproxy agent: cannot listen"), lines
    assert "Traceback" not in result.stderr
