"""One client's misbehaviour, or the agent's absence, costs the other clients nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from peers import reference_agent, stop_process
from qproxy.refagent import ReferenceAgent
from qproxy.refagent.commands import Command
from qproxy.server import Server


def _worker(raw: Any, path: Path, n: int, stop: gevent.event.Event) -> int:
    """Echo calls with ids until told to stop; every reply must be exactly ours."""
    done = 0
    with raw(path) as client:
        client.sync_delimited()
        while not stop.is_set() or done < 20:
            payload = {"worker": n, "seq": done}
            reply = client.call("qproxy-echo", payload, id=[n, done])
            assert reply == {"return": payload, "id": [n, done]}, reply
            done += 1
    return done


@pytest.mark.timeout(30)
def test_garbage_half_message_and_oversize_leave_others_alone(
        refagent_socket: Path, serve: Any, raw: Any) -> None:
    with serve(refagent_socket, "--max-message-size", "4096") as (proc, proxy):
        stop = gevent.event.Event()
        workers = [gevent.spawn(_worker, raw, proxy, n, stop) for n in range(4)]
        gevent.sleep(0.1)

        # Garbage: the agent-like id-less parse error, and the session goes on.
        with raw(proxy) as client:
            client.send(b"this is not json\n")
            error = client.read()
            assert "id" not in error
            assert error["error"]["class"] == "GenericError"
            assert error["error"]["desc"].startswith("JSON parse error")
            assert client.call("guest-ping", id=5) == {"return": {}, "id": 5}
            # 0xFF alone: the stray parse error qemu-ga sends, then business as usual.
            client.send(b"\xff")
            assert client.read() == {"error": {"class": "GenericError",
                                               "desc": "JSON parse error, stray '\ufffd'"}}
            assert client.call("guest-ping", id="after-ff") == {"return": {}, "id": "after-ff"}

        # Half a message, then gone.
        with raw(proxy) as client:
            client.send(b'{"execute": "qproxy-echo", "arguments": {"half": ')

        # Over-size: an error naming the limit, then the server closes the session.
        with raw(proxy) as client:
            assert client.call("guest-ping", id=1) == {"return": {}, "id": 1}
            big = json.dumps({"execute": "qproxy-echo", "arguments": {"x": "y" * 10_000}})
            client.send(big.encode() + b"\n")
            error = client.read()
            assert error["error"]["class"] == "GenericError"
            assert error["error"]["desc"].startswith("qproxy: ")
            assert "4096" in error["error"]["desc"]
            assert client.read_eof() == b""

        stop.set()
        gevent.joinall(workers, timeout=20, raise_error=True)
        assert all(w.successful() and w.value >= 20 for w in workers)
        with raw(proxy) as client:
            client.sync_delimited()
            assert client.call("guest-ping", id=9) == {"return": {}, "id": 9}
        assert proc.poll() is None


@pytest.mark.timeout(30)
def test_client_leaving_mid_call_costs_nobody_anything(
        refagent_socket: Path, workdir: Path, raw: Any) -> None:
    server = Server(f"unix:{refagent_socket}", [f"unix:{workdir / 'p.sock'}"]).start()
    try:
        proxy = workdir / "p.sock"
        leaver = raw(proxy)
        leaver.send({"execute": "qproxy-sleep", "arguments": {"seconds": 0.5}, "id": 1})
        with raw(proxy) as stayer:
            # Same id as the leaver's: its late reply must never reach anybody else.
            stayer.send({"execute": "qproxy-echo", "arguments": {"me": "stayer"}, "id": 1})
            gevent.sleep(0.1)
            leaver.close()
            started = time.monotonic()
            assert stayer.read() == {"return": {"me": "stayer"}, "id": 1}
            assert time.monotonic() - started < 2
            deadline = time.monotonic() + 5
            while server.channel.stats.late_replies < 1 and time.monotonic() < deadline:
                gevent.sleep(0.02)
            assert server.channel.stats.late_replies == 1  # the leaver's reply, dropped
            assert server.channel.stats.abandoned == 1     # ... because it was abandoned
            assert server.channel.stats.timeouts == 0      # (a departure, not a timeout)
            assert len(server.sessions) == 1
            assert stayer.call("guest-ping", id=1) == {"return": {}, "id": 1}
        with raw(proxy) as fresh:
            fresh.sync_delimited()
            assert fresh.call("qproxy-echo", {"n": 1}, id=1) == {"return": {"n": 1}, "id": 1}
    finally:
        server.stop(grace=1)


@pytest.mark.timeout(30)
def test_agent_unavailable_gets_an_error_reply_not_silence(
        workdir: Path, serve: Any, raw: Any) -> None:
    with reference_agent(workdir) as (agent, agent_sock), \
            serve(agent_sock) as (proc, proxy), raw(proxy) as client:
        assert client.call("guest-ping", id=1) == {"return": {}, "id": 1}
        client.send({"execute": "qproxy-sleep", "arguments": {"seconds": 10}, "id": "slow"})
        gevent.sleep(0.2)
        stop_process(agent)
        lost = client.read()
        assert lost["id"] == "slow"
        assert lost["error"]["class"] == "GenericError"
        assert lost["error"]["desc"].startswith("qproxy: ")
        reply = client.call("guest-ping", id=2)
        assert reply["id"] == 2 and reply["error"]["desc"].startswith("qproxy: "), reply
        reply = client.call("guest-ping")
        assert "id" not in reply and reply["error"]["desc"].startswith("qproxy: "), reply
        # The agent comes back on the same path: the server reconnects by itself.
        with reference_agent(workdir):
            deadline = time.monotonic() + 10
            while True:
                reply = client.call("guest-ping", id=3)
                if "return" in reply or time.monotonic() > deadline:
                    break
                gevent.sleep(0.1)
            assert reply == {"return": {}, "id": 3}
        assert proc.poll() is None


@pytest.mark.timeout(20)
def test_commands_without_success_response_do_not_stall_later_replies(
        workdir: Path, raw: Any) -> None:
    agent = ReferenceAgent(f"unix:{workdir / 'a.sock'}", extra_commands=[
        Command("guest-shutdown", lambda args: {}, success_response=False)]).start()
    server = Server(f"unix:{workdir / 'a.sock'}", [f"unix:{workdir / 'p.sock'}"]).start()
    try:
        with raw(workdir / "p.sock") as client:
            client.send({"execute": "guest-shutdown", "id": 1})
            assert client.call("guest-ping", id=2) == {"return": {}, "id": 2}
            assert client.call("guest-ping", id=3) == {"return": {}, "id": 3}
    finally:
        server.stop(grace=1)
        agent.stop()


@pytest.mark.timeout(30)
def test_backpressure_a_client_that_does_not_read_is_not_read(
        workdir: Path, raw: Any) -> None:
    agent = ReferenceAgent(f"unix:{workdir / 'a.sock'}").start()
    server = Server(f"unix:{workdir / 'a.sock'}", [f"unix:{workdir / 'p.sock'}"],
                    max_in_flight=16).start()
    try:
        count = 40_000  # ~1.5 MB of requests: far more than the socket buffers hold
        requests = b"".join(b'{"execute": "guest-ping", "id": %d}\n' % i for i in range(count))
        with raw(workdir / "p.sock") as greedy, raw(workdir / "p.sock") as polite:
            sender = gevent.spawn(greedy.sock.sendall, requests)
            gevent.sleep(0.5)
            assert not sender.ready(), "the server kept reading from a client that does not read"
            session = next(s for s in server.sessions if s.requests)
            stalled_at = session.requests
            assert stalled_at < count
            for i in range(20):  # everybody else is served meanwhile
                assert polite.call("guest-ping", id=i) == {"return": {}, "id": i}
            gevent.sleep(0.2)
            assert session.requests == stalled_at, "reading went on regardless"
            for i in range(count):  # now read: every reply, in order
                assert greedy.read() == {"return": {}, "id": i}
            sender.get(timeout=5)
    finally:
        server.stop(grace=1)
        agent.stop()


@pytest.mark.timeout(20)
def test_half_closed_client_still_gets_its_replies(refagent_socket: Path, serve: Any,
                                                   raw: Any) -> None:
    import socket as stdsocket

    with serve(refagent_socket) as (_, proxy), raw(proxy) as client:
        client.send(b'{"execute": "qproxy-sleep", "arguments": {"seconds": 0.3}, "id": 1}\n'
                    b'{"execute": "guest-ping", "id": 2}\n')
        client.sock.shutdown(stdsocket.SHUT_WR)  # what socat does when its input ends
        assert client.read()["id"] == 1
        assert client.read() == {"return": {}, "id": 2}
        assert client.read_eof() == b""


@pytest.mark.timeout(30)
def test_an_agent_restart_2011_style_answers_every_pending_client(
        workdir: Path, serve: Any, raw: Any) -> None:
    """The RFC's promise: on guest_init mid-session, callers get an error, not silence."""
    with reference_agent(workdir, "--xport-2011") as (_, agent_sock), \
            serve(agent_sock, "--handshake", "xport-2011") as (_, proxy), \
            raw(proxy) as waiting, raw(proxy) as restarter:
        waiting.send({"execute": "qproxy-sleep", "arguments": {"seconds": 1.5}, "id": "w"})
        gevent.sleep(0.1)
        restarter.send({"execute": "qproxy-restart", "arguments": {"after": 0.1}, "id": "r"})
        for client, cid in ((waiting, "w"), (restarter, "r")):
            reply = client.read()
            assert reply["id"] == cid
            assert reply["error"]["class"] == "GenericError"
            assert "restarted" in reply["error"]["desc"], reply
        assert waiting.call("qproxy-echo", {"after": "restart"}, id=1) == {
            "return": {"after": "restart"}, "id": 1}
