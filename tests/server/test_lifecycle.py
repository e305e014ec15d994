"""Sockets, permissions, stale files and shutdown of ``qproxy serve``."""

from __future__ import annotations

import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from peers import stop_process


def _serve_cmd(agent: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qproxy", "serve", f"unix:{agent}", *extra]


@pytest.mark.timeout(30)
def test_socket_mode_is_0600_by_default_and_mode_changes_it(
        refagent_socket: Path, serve: Any) -> None:
    with serve(refagent_socket) as (_, proxy):
        assert stat.S_IMODE(proxy.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(proxy.stat().st_mode)
    assert not proxy.exists(), "the socket file outlived the server"
    with serve(refagent_socket, "--mode", "0660", name="p2.sock") as (_, proxy):
        assert stat.S_IMODE(proxy.stat().st_mode) == 0o660


@pytest.mark.timeout(30)
def test_stale_socket_is_replaced_live_one_refused(
        refagent_socket: Path, workdir: Path, serve: Any, raw: Any) -> None:
    stale = workdir / "proxy.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # a socket file nobody listens on
    with serve(refagent_socket) as (_, proxy), raw(proxy) as client:
        assert client.call("guest-ping", id=1) == {"return": {}, "id": 1}
        # A second server on the same path must refuse, and leave the live one alone.
        second = subprocess.run(_serve_cmd(refagent_socket, "--listen", f"unix:{proxy}"),
                                capture_output=True, text=True, timeout=20)
        assert second.returncode == 2
        assert "another program is listening on this socket" in second.stderr
        assert "Traceback" not in second.stderr
        assert proxy.exists()
        assert client.call("guest-ping", id=2) == {"return": {}, "id": 2}
    # A regular file is never replaced.
    regular = workdir / "file.sock"
    regular.write_text("precious")
    third = subprocess.run(_serve_cmd(refagent_socket, "--listen", f"unix:{regular}"),
                           capture_output=True, text=True, timeout=20)
    assert third.returncode == 2 and "is not a socket" in third.stderr
    assert regular.read_text() == "precious"


@pytest.mark.timeout(30)
def test_no_agent_fails_at_start_with_one_clear_line(workdir: Path) -> None:
    result = subprocess.run(_serve_cmd(workdir / "nothing.sock", "--listen",
                                       f"unix:{workdir / 'p.sock'}"),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "could not reach the agent" in result.stderr and "--wait" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "p.sock").exists()


@pytest.mark.timeout(30)
def test_tcp_listens_on_loopback(refagent_socket: Path, workdir: Path) -> None:
    proc = subprocess.Popen(_serve_cmd(refagent_socket, "--listen", "tcp:0", "--listen",
                                       f"unix:{workdir / 'p.sock'}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 15
        while "serving" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "qproxy serve exited before serving"
        match = re.search(r"tcp:127\.0\.0\.1:(\d+)", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5) as s:
            s.sendall(b'{"execute": "guest-ping", "id": "tcp"}\n')
            assert s.recv(100) == b'{"return": {}, "id": "tcp"}\n'
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.timeout(30)
def test_sigterm_with_clients_connected_is_clean_and_prompt(
        refagent_socket: Path, serve: Any, raw: Any) -> None:
    with serve(refagent_socket, "--grace", "1") as (proc, proxy):
        idle = raw(proxy)
        quick = raw(proxy)
        slow = raw(proxy)
        assert idle.call("guest-ping", id=0) == {"return": {}, "id": 0}
        # qemu-ga-like agents run commands in order: the quick call waits for the 0.3 s
        # sleep and then finishes within the grace period; the 30 s one cannot.
        quick.send({"execute": "qproxy-sleep", "arguments": {"seconds": 0.3}, "id": "q"})
        gevent.sleep(0.05)
        slow.send({"execute": "qproxy-sleep", "arguments": {"seconds": 30}, "id": "s"})
        gevent.sleep(0.1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 4, f"shutdown took {elapsed:.1f} s"
        assert not proxy.exists(), "the socket file outlived the server"
        reply = quick.read()
        assert reply["id"] == "q" and "return" in reply, reply
        reply = slow.read()
        assert reply["id"] == "s" and reply["error"]["class"] == "GenericError", reply
        assert reply["error"]["desc"].startswith("qproxy: the server is shutting down")
        for client in (idle, quick, slow):
            assert client.read_eof() == b""
            client.close()
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output
        stop_process(proc)


@pytest.mark.timeout(30)
def test_wait_for_an_agent_that_comes_later(workdir: Path, raw: Any) -> None:
    from peers import reference_agent

    proxy = workdir / "p.sock"
    agent_sock = workdir / "late.sock"
    proc = subprocess.Popen(_serve_cmd(agent_sock, "--wait", "--listen", f"unix:{proxy}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not proxy.exists():
            assert proc.poll() is None, "qproxy serve --wait gave up"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # The socket is bound while the agent is awaited: a client can connect already.
        with raw(proxy) as early:
            early.send({"execute": "guest-ping", "id": "early"})
            time.sleep(0.3)
            assert proc.poll() is None
            with reference_agent(workdir, name="late.sock"):
                assert early.read() == {"return": {}, "id": "early"}
                assert early.call("guest-ping", id=2) == {"return": {}, "id": 2}
    finally:
        stop_process(proc)
    assert proc.returncode == 0


@pytest.mark.timeout(30)
def test_sigterm_while_waiting_for_the_agent_exits_cleanly(workdir: Path) -> None:
    proxy = workdir / "p.sock"
    proc = subprocess.Popen(_serve_cmd(workdir / "never.sock", "--wait", "--listen",
                                       f"unix:{proxy}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not proxy.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert not proxy.exists()
    stop_process(proc)
