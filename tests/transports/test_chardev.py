"""chardev: against real ptys with a real qemu-ga, and /dev/null as an agent-less port.

A virtio-serial port whose host side is closed reads 0 bytes and polls readable for
ever; ``/dev/null`` behaves the same way, so it stands in for "a port with no peer".
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import termios
import time
from pathlib import Path

import gevent
import pytest

import qproxy
from ptys import Rig, concurrent_syncs, connect, noisy_calls, wait_until_answers
from qproxy.core.channel import Channel, State
from qproxy.transports import transport_for
from qproxy.transports.chardev import CharDevTransport


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "message"), [
    ("chardev:", "needs a device path"),
    ("chardev:/dev/vport0p1?baud=9600", "unknown option(s) baud (allowed: exclusive)"),
    ("chardev:/dev/vport0p1?exclusive=perhaps", "exclusive='perhaps' must be one of"),
])
def test_bad_urls_are_rejected_clearly(url: str, message: str) -> None:
    with pytest.raises(qproxy.InvalidURL) as info:
        transport_for(url)
    assert message in str(info.value)


@pytest.mark.timeout(10)
def test_open_errors_name_the_path(workdir: Path) -> None:
    missing = workdir / "vport9p9"
    with pytest.raises(qproxy.TransportError) as info:
        transport_for(f"chardev:{missing}").open()
    assert str(info.value).startswith(f"chardev:{missing}: no such device {missing}")
    plain = workdir / "file"
    plain.write_bytes(b"")
    with pytest.raises(qproxy.TransportError, match="is not a character device"):
        transport_for(f"chardev:{plain}").open()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(workdir / "sock"))
        with pytest.raises(qproxy.TransportError) as info:
            transport_for(f"chardev:{workdir / 'sock'}").open()
    assert str(info.value) == f"chardev:{workdir}/sock: {workdir}/sock is a Unix socket; " \
                              f"use unix:{workdir}/sock"
    t = transport_for(f"chardev:{workdir}")
    assert isinstance(t, CharDevTransport)
    with pytest.raises(qproxy.TransportError, match="is a directory, not a character device"):
        t.open()


@pytest.mark.timeout(15)
def test_pty_is_set_raw_and_can_be_reopened(line_rig: Rig) -> None:
    # socat made the pty raw already; undo that so the test sees chardev do it.
    fd = os.open(line_rig.line.b, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[3] |= termios.ICANON | termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    os.close(fd)
    t = transport_for(f"chardev:{line_rig.line.b}")
    for _ in range(2):
        t.open()
        _iflag, oflag, _cflag, lflag, _i, _o, cc = termios.tcgetattr(t.fileno())
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert not oflag & termios.OPOST
        assert cc[termios.VMIN] == 1 and cc[termios.VTIME] == 0
        t.close()


@pytest.mark.timeout(15)
def test_second_open_is_busy(line_rig: Rig) -> None:
    device = line_rig.line.b
    first = transport_for(f"chardev:{device}")
    first.open()
    try:
        with pytest.raises(qproxy.TransportError) as info:
            transport_for(f"chardev:{device}").open()
        assert str(info.value).startswith(f"chardev:{device}: {device} is busy")
        with pytest.raises(qproxy.TransportError, match="is busy"):
            transport_for(f"serial:{device}").open()
        shared = transport_for(f"chardev:{device}?exclusive=0")
        shared.open()
        shared.close()
    finally:
        first.close()


@pytest.mark.timeout(30)
def test_calls_over_a_pty(line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    agent = connect(f"chardev:{line_rig.line.b}", line_rig)
    agents.append(agent)
    assert agent.call("guest-ping") == {}
    info = agent.info()
    assert info["version"] and any(c["name"] == "guest-info" for c in info["supported_commands"])
    concurrent_syncs(agent, greenlets=20, calls=50)


@pytest.mark.timeout(40)
def test_noise_on_the_line_is_survived(line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    agent = connect(f"chardev:{line_rig.line.b}", line_rig)
    agents.append(agent)
    outcomes = noisy_calls(agent, line_rig)
    stats = agent.channel.stats
    assert outcomes["ok"] > 0, outcomes
    assert stats.protocol_errors + stats.discarded > 0, "the noise never reached qproxy"
    wait_until_answers(agent, 10)
    concurrent_syncs(agent, greenlets=10, calls=20)


@pytest.mark.timeout(40)
def test_pty_closed_mid_call_fails_at_once_and_recovers(
        line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    device = line_rig.line.b
    agent = connect(f"chardev:{device}", line_rig)
    agents.append(agent)
    assert agent.call("guest-ping") == {}
    assert line_rig.qga.proc is not None
    qga_pid = line_rig.qga.proc.pid
    os.kill(qga_pid, signal.SIGSTOP)
    try:
        calls = [agent.call_async("guest-sync", {"id": i}) for i in range(10)]
        gevent.sleep(0.2)
        assert not any(c.ready() for c in calls)
        pulled = time.monotonic()
        cpu_before = _cpu_seconds()
        line_rig.line.kill()
        for c in calls:
            with pytest.raises(qproxy.ConnectionLost):
                c.get(timeout=10)
        assert time.monotonic() - pulled < 1.0
        gevent.sleep(1.0)  # the device is gone: the channel backs off, it does not spin
        assert _cpu_seconds() - cpu_before < 0.3
        assert agent.channel.state is not State.READY
        assert f"chardev:{device}: no such device {device}" in str(agent.channel.last_error)
    finally:
        os.kill(qga_pid, signal.SIGCONT)
    line_rig.restart()
    wait_until_answers(agent, 15)
    concurrent_syncs(agent, greenlets=5, calls=20)


@pytest.mark.timeout(10)
def test_dead_pty_reads_end_of_stream_once(line_rig: Rig) -> None:
    t = transport_for(f"chardev:{line_rig.line.b}")
    t.open()
    reader = gevent.spawn(t.read)
    gevent.sleep(0.1)
    line_rig.line.kill()  # the other side closes: EIO, and poll reports HUP for ever
    assert reader.get(timeout=2) == b""
    t.close()


@pytest.mark.timeout(15)
def test_port_without_a_peer_backs_off_without_spinning() -> None:
    # Like a virtio-serial port with no host side: opens, reads 0, polls readable.
    channel = Channel("chardev:/dev/null?exclusive=0", backoff_base=0.1, backoff_cap=1.0)
    cpu_before = _cpu_seconds()
    channel.start()
    try:
        gevent.sleep(0.3)
        started = time.monotonic()
        call = channel.submit({"execute": "guest-ping"})
        with pytest.raises(qproxy.ConnectionLost):
            call.get(timeout=5)
        assert time.monotonic() - started < 0.5  # fails at once, not after a timeout
        gevent.sleep(1.2)
        reconnects = channel.stats.reconnects
        cpu = _cpu_seconds() - cpu_before
        assert 2 <= reconnects <= 15, f"{reconnects} reopen attempts in 1.5 s"
        assert cpu < 0.3, f"{cpu:.2f} s of CPU in 1.5 s: spinning"
        assert channel.state is not State.READY
    finally:
        channel.close()
