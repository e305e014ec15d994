"""qproxy.connect() and Agent.call() against a real qemu-ga, the reference agent and faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gevent
import pytest

import qproxy
from fakepeer import FakePeer, reply
from peers import reference_agent
from qproxy.core.channel import State


@pytest.mark.timeout(30)
def test_real_qemu_ga_basics(qga_socket: Path) -> None:
    with qproxy.connect(f"unix:{qga_socket}") as agent:
        assert agent.connected
        assert agent.call("guest-ping") == {}
        info = agent.info()
        names = {c["name"] for c in info["supported_commands"]}
        assert {"guest-ping", "guest-sync-delimited", "guest-get-osinfo"} <= names
        osinfo = agent.call("guest-get-osinfo")
        assert osinfo["kernel-release"] == os.uname().release
        with pytest.raises(qproxy.AgentError) as err:
            agent.call("guest-no-such-command")
        assert err.value.error_class == "CommandNotFound"
        assert "guest-no-such-command" in err.value.desc
        # A blocked command is refused by the agent itself (safety net of the test bed).
        with pytest.raises(qproxy.AgentError):
            agent.call("guest-shutdown")
        assert agent.call("guest-sync", {"id": 77}) == 77


@pytest.mark.timeout(60)
def test_50_greenlets_get_their_own_replies(qga_socket: Path) -> None:
    with qproxy.connect(f"unix:{qga_socket}") as agent:
        def session(n: int) -> list[tuple[int, int]]:
            wrong = []
            for i in range(100):
                token = n * 1000 + i
                got = agent.call("guest-sync", {"id": token})
                if got != token:
                    wrong.append((token, got))
            return wrong

        jobs = [gevent.spawn(session, n) for n in range(50)]
        gevent.joinall(jobs, raise_error=True)
        assert all(job.value == [] for job in jobs)
        assert agent.channel.stats.replies >= 5000
        assert agent.channel.stats.late_replies == 0


@pytest.mark.timeout(30)
def test_timeout_then_the_next_call_gets_its_own_reply(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        with pytest.raises(qproxy.CallTimeout) as err:
            agent.call("qproxy-sleep", {"seconds": 0.5}, timeout=0.1)
        assert "qproxy-sleep" in str(err.value)
        # The agent runs commands in order: this call's reply comes after the late one.
        assert agent.call("qproxy-echo", {"n": 1}) == {"n": 1}
        assert agent.channel.stats.late_replies == 1
        assert agent.call("guest-sync", {"id": 5}) == 5


@pytest.mark.timeout(30)
def test_agent_killed_mid_call_fails_the_call_at_once(workdir: Path) -> None:
    with reference_agent(workdir) as (proc, sock):
        agent = qproxy.connect(f"unix:{sock}")
        pending = [agent.call_async("qproxy-sleep", {"seconds": 20}) for _ in range(3)]
        gevent.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        for result in pending:
            # ConnectionLost, not the 30 s default timeout: the failure is immediate.
            with pytest.raises(qproxy.ConnectionLost):
                result.get(timeout=10)
        agent.close()


@pytest.mark.timeout(30)
def test_reconnects_when_the_agent_comes_back(workdir: Path) -> None:
    with reference_agent(workdir) as (proc, sock):
        agent = qproxy.connect(f"unix:{sock}")
        assert agent.call("guest-ping") == {}
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _ in range(100):  # the hub must run for the channel to notice
            if not agent.connected:
                break
            gevent.sleep(0.05)
        assert not agent.connected
        with pytest.raises(qproxy.ConnectionLost) as err:
            agent.call("guest-ping")
        assert "not connected" in str(err.value)
    with reference_agent(workdir):
        for _ in range(100):
            if agent.connected:
                break
            gevent.sleep(0.05)
        assert agent.call("guest-ping") == {}
        assert agent.channel.stats.reconnects >= 1
        agent.close()


@pytest.mark.timeout(30)
def test_old_agent_without_ids_falls_back_to_order(workdir: Path) -> None:
    with reference_agent(workdir, "--no-echo-ids") as (_, sock), \
            qproxy.connect(f"unix:{sock}") as agent:
        results = [agent.call_async("guest-sync", {"id": i}) for i in range(200)]
        assert [r.get(timeout=10) for r in results] == list(range(200))
        assert agent.channel.echoes_ids is False
        # A timeout in order-matching mode: the late reply must not be misrouted.
        with pytest.raises(qproxy.CallTimeout):
            agent.call("qproxy-sleep", {"seconds": 0.5}, timeout=0.1)
        assert agent.call("qproxy-echo", {"after": "timeout"}) == {"after": "timeout"}
        assert agent.call("guest-sync", {"id": 9}) == 9


@pytest.mark.timeout(30)
def test_thousands_of_greenlets(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        def one(i: int) -> Any:
            return agent.call("qproxy-echo", {"i": i})

        jobs = [gevent.spawn(one, i) for i in range(3000)]
        gevent.joinall(jobs, raise_error=True)
        assert [j.value for j in jobs] == [{"i": i} for i in range(3000)]


@pytest.mark.timeout(30)
def test_call_async_and_agent_errors(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        ok = agent.call_async("qproxy-echo", {"x": [1, 2]})
        bad = agent.call_async("qproxy-fail", {"class": "Custom", "desc": "no"})
        assert ok.get(timeout=5) == {"x": [1, 2]}
        with pytest.raises(qproxy.AgentError) as err:
            bad.get(timeout=5)
        assert (err.value.error_class, err.value.desc) == ("Custom", "no")


@pytest.mark.timeout(30)
def test_large_reply(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        blob = agent.call("qproxy-blob", {"size": 20 * 1024 * 1024})
        assert blob["size"] == len(blob["data"]) == 20 * 1024 * 1024


@pytest.mark.timeout(30)
def test_over_size_reply_fails_the_call_and_the_channel_recovers(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}", max_message_size=100_000) as agent:
        with pytest.raises(qproxy.ConnectionLost) as err:
            agent.call("qproxy-blob", {"size": 200_000}, timeout=10)
        assert "lost" in str(err.value)
        assert agent.call("guest-ping") == {}
        assert agent.channel.stats.protocol_errors == 1


@pytest.mark.timeout(30)
def test_close_fails_pending_and_later_calls(refagent_socket: Path) -> None:
    agent = qproxy.connect(f"unix:{refagent_socket}")
    pending = agent.call_async("qproxy-sleep", {"seconds": 5})
    agent.close()
    with pytest.raises(qproxy.ChannelClosed):
        pending.get(timeout=5)
    with pytest.raises(qproxy.ChannelClosed):
        agent.call("guest-ping")
    assert agent.channel.state is State.CLOSED


@pytest.mark.timeout(30)
def test_connect_errors_are_clear(workdir: Path) -> None:
    with pytest.raises(qproxy.ConnectFailed) as err:
        qproxy.connect(f"unix:{workdir}/missing.sock")
    assert "missing.sock" in str(err.value) and "no such socket" in str(err.value).lower()
    with pytest.raises(qproxy.InvalidURL) as bad:
        qproxy.connect("carrier-pigeon:coop")
    assert "unix" in str(bad.value) and "tcp" in str(bad.value)


@pytest.mark.timeout(30)
def test_silent_peer_fails_the_handshake(workdir: Path) -> None:
    # A listener that never answers anything, sync included.
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(workdir / "mute.sock"))
    silent.listen(1)
    try:
        with pytest.raises(qproxy.ConnectFailed) as err:
            qproxy.connect(f"unix:{workdir}/mute.sock", timeout=1.5)
        assert "did not answer" in str(err.value)
    finally:
        silent.close()


@pytest.mark.timeout(30)
def test_garbage_from_the_agent_is_survived(workdir: Path) -> None:
    def respond(request: dict[str, Any], write: Any) -> None:
        n = request.get("arguments", {}).get("n", 0)
        if n % 3 == 0:
            write(b"[   1.234567] kernel: noise {{{ \n")
        if n % 7 == 0:
            # This reply is garbled on the way: the call learns at once, via the re-sync.
            write(b'{"return": {"n": oops}, "id": ' + str(request["id"]).encode() + b"}\n")
            return
        write(reply(request, {"n": n}))

    peer = FakePeer(workdir / "noisy.sock", respond).start()
    try:
        with qproxy.connect(f"unix:{workdir}/noisy.sock") as agent:
            outcomes: dict[str, int] = {"ok": 0, "lost": 0}
            for n in range(1, 40):
                try:
                    assert agent.call("x", {"n": n}, timeout=10) == {"n": n}
                    outcomes["ok"] += 1
                except qproxy.ConnectionLost:
                    assert n % 7 == 0
                    outcomes["lost"] += 1
            assert outcomes == {"ok": 34, "lost": 5}
            assert agent.channel.stats.protocol_errors > 0
    finally:
        peer.stop()


@pytest.mark.timeout(30)
def test_unsolicited_messages_reach_subscribers(workdir: Path) -> None:
    def respond(request: dict[str, Any], write: Any) -> None:
        write(b'{"event": "SHUTDOWN", "data": {"guest": true}}\n' + reply(request, 1))

    peer = FakePeer(workdir / "events.sock", respond).start()
    try:
        with qproxy.connect(f"unix:{workdir}/events.sock") as agent:
            seen: list[dict[str, Any]] = []
            agent.channel.subscribe(seen.append)
            assert agent.call("x") == 1
            assert seen == [{"event": "SHUTDOWN", "data": {"guest": True}}]
    finally:
        peer.stop()


@pytest.mark.timeout(60)
def test_plain_script_without_gevent_knowledge(refagent_socket: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import qproxy
        with qproxy.connect("unix:{refagent_socket}") as agent:
            print(agent.call("guest-sync", {{"id": 42}}))
            print(agent.call("qproxy-echo", {{"hello": "world"}}))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["42", "{'hello': 'world'}"]


@pytest.mark.timeout(30)
def test_commands_without_a_success_reply(refagent_socket: Path) -> None:
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        assert "qproxy-noreply" not in agent.no_reply
        agent.info()  # guest-info lists success-response: false for it
        assert "qproxy-noreply" in agent.no_reply
        # Returns as soon as a guest-sync sent after it is answered, not at the timeout.
        assert agent.call("qproxy-noreply", timeout=20) is None
        with pytest.raises(qproxy.AgentError) as err:
            agent.call("qproxy-noreply", {"fail": True}, timeout=20)
        assert "qproxy-noreply" in err.value.desc
        assert agent.call("guest-ping") == {}
        assert agent.channel.stats.timeouts == 0


@pytest.mark.timeout(30)
def test_guest_shutdown_error_comes_back_through_the_no_reply_path(qga_socket: Path) -> None:
    """qemu-ga here blocks guest-shutdown: its error must still reach the caller."""
    with qproxy.connect(f"unix:{qga_socket}") as agent:
        assert "guest-shutdown" in agent.no_reply
        with pytest.raises(qproxy.AgentError) as err:
            agent.call("guest-shutdown", {"mode": "powerdown"}, timeout=20)
        assert err.value.error_class == "CommandNotFound"
        assert "disabled" in err.value.desc


@pytest.mark.timeout(30)
def test_close_wakes_a_blocked_call(refagent_socket: Path) -> None:
    agent = qproxy.connect(f"unix:{refagent_socket}")
    blocked = gevent.spawn(agent.call, "qproxy-sleep", {"seconds": 10})
    gevent.sleep(0.1)
    agent.close()
    with pytest.raises(qproxy.ChannelClosed):
        blocked.get(timeout=5)


@pytest.mark.timeout(60)
def test_timeouts_mixed_with_calls_never_misroute(refagent_socket: Path) -> None:
    """Many greenlets; some calls time out (late replies, re-syncs), the rest must be exact."""
    with qproxy.connect(f"unix:{refagent_socket}") as agent:
        def session(n: int) -> tuple[int, int]:
            ok = timeouts = 0
            for i in range(15):
                if (n + i) % 5 == 0:
                    try:
                        agent.call("qproxy-sleep", {"seconds": 0.02}, timeout=0.005)
                    except qproxy.CallTimeout:
                        timeouts += 1
                    continue
                token = {"n": n, "i": i}
                assert agent.call("qproxy-echo", token, timeout=20) == token
                ok += 1
            return ok, timeouts

        jobs = [gevent.spawn(session, n) for n in range(100)]
        gevent.joinall(jobs, raise_error=True)
        assert sum(j.value[0] for j in jobs) == 1200
        assert sum(j.value[1] for j in jobs) > 0
        stats = agent.channel.stats
        assert stats.late_replies >= 1
        assert agent.call("guest-ping") == {}
