"""The 2011 handshake against the reference agent playing the RFC's agent."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest

import qproxy
from peers import reference_agent
from qproxy.core import xport


def test_events_on_the_wire() -> None:
    assert xport.host_ack(7) == b'\xff{"_xport_event": "host_ack", "_xport_arg_sid": 7}'
    init = {"_xport_event": "guest_init", "_xport_arg_sid": 9}
    assert xport.event_of(init) == "guest_init" and xport.session_of(init) == 9
    assert xport.event_of({"return": 1}) is None


@pytest.mark.timeout(30)
def test_calls_after_the_handshake_are_matched_in_order(workdir: Path) -> None:
    with reference_agent(workdir, "--xport-2011") as (_, sock), \
            qproxy.connect(f"unix:{sock}", handshake="xport-2011") as agent:
        assert agent.call("guest-ping") == {}
        results = [agent.call_async("qproxy-echo", {"n": n}) for n in range(100)]
        assert [r.get(timeout=10) for r in results] == [{"n": n} for n in range(100)]
        assert agent.channel.echoes_ids is False


@pytest.mark.timeout(30)
def test_a_restart_cancels_calls_in_flight_and_the_session_goes_on(workdir: Path) -> None:
    with reference_agent(workdir, "--xport-2011") as (_, sock), \
            qproxy.connect(f"unix:{sock}", handshake="xport-2011") as agent:
        slow = agent.call_async("qproxy-sleep", {"seconds": 1.5})
        queued = agent.call_async("qproxy-echo", {"queued": True})
        agent.channel.submit({"execute": "qproxy-restart", "arguments": {"after": 0.2}})
        # Cancelled with AgentReset as soon as the new guest_init arrives (at 0.2 s).
        for result in (slow, queued):
            with pytest.raises(qproxy.AgentReset):
                result.get(timeout=3)
        assert agent.channel.stats.agent_resets == 1
        # The channel acked the new session; calls work, and nothing old is misrouted.
        for n in range(20):
            assert agent.call("qproxy-echo", {"after": n}, timeout=10) == {"after": n}
        gevent.sleep(1.5)  # past the old sleep's end: its reply never comes to anyone
        assert agent.call("guest-sync", {"id": 5}) == 5


@pytest.mark.timeout(30)
def test_timeouts_keep_their_place_in_the_order(workdir: Path) -> None:
    with reference_agent(workdir, "--xport-2011") as (_, sock), \
            qproxy.connect(f"unix:{sock}", handshake="xport-2011") as agent:
        with pytest.raises(qproxy.CallTimeout):
            agent.call("qproxy-sleep", {"seconds": 0.3}, timeout=0.05)
        # No sync exists in this protocol: the late reply is consumed in turn.
        assert agent.call("qproxy-echo", {"next": 1}) == {"next": 1}
        assert agent.channel.stats.late_replies == 1
