"""serial:, rfc2217://, socket:// and loop:// against real ttys and a real qemu-ga.

The line is a socat pty pair with ``qemu-ga -m isa-serial`` on one end; qproxy opens the
other end through pyserial.  Nothing here mocks pyserial.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import pytest

import qproxy
from peers import stop_process
from ptys import (
    UNCLOSED_TO_AGENT,
    Rig,
    concurrent_syncs,
    connect,
    noisy_calls,
    rfc2217_server,
    socat_binary,
    wait_until_answers,
)
from qproxy.transports import transport_for
from qproxy.transports.serialport import SerialTransport, ThreadedSerialTransport
from qproxy.transports.sockets import TCPTransport


def _outcome(func: Callable[[], object]) -> object:
    """Run ``func``; return its result or the qproxy error it raised (no traceback print)."""
    try:
        return func()
    except qproxy.QProxyError as exc:
        return exc


def _ticker(ticks: list[float]) -> None:
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)


# -- URLs ---------------------------------------------------------------------------------
@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "message"), [
    ("serial:", "needs a device"),
    ("serial:/dev/ttyS0?speed=9600", "unknown option(s) speed"),
    ("serial:/dev/ttyS0?baud=fast", "baud='fast' must be an integer"),
    ("serial:/dev/ttyS0?baud=0", "must be a positive"),
    ("serial:/dev/ttyS0?bytesize=9", "bytesize=9 must be 5, 6, 7 or 8"),
    ("serial:/dev/ttyS0?parity=X", "parity='X' must be one of N, E, O, M, S"),
    ("serial:/dev/ttyS0?stopbits=3", "stopbits='3' must be 1, 1.5 or 2"),
    ("serial:/dev/ttyS0?rtscts=maybe", "rtscts='maybe' must be one of"),
    ("serial:/dev/ttyS0?exclusive=2", "exclusive='2' must be one of"),
    ("loop://?baud=9600", "unknown option(s) baud"),
    ("loop://somewhere", "takes no address"),
    ("rfc2217:host:2217", "expected rfc2217://HOST:PORT"),
    ("rfc2217://host", "expected HOST:PORT"),
    ("rfc2217://host:2217?exclusive=1", "unknown option(s) exclusive"),
    ("socket://host:99999", "out of range"),
])
def test_bad_urls_are_rejected_clearly(url: str, message: str) -> None:
    with pytest.raises(qproxy.InvalidURL) as info:
        transport_for(url)
    assert message in str(info.value)


@pytest.mark.timeout(10)
def test_urls_map_to_the_right_transport() -> None:
    t = transport_for("serial:/dev/ttyUSB0?baud=9600&parity=E&stopbits=2&bytesize=7")
    assert isinstance(t, SerialTransport)
    assert t.device == "/dev/ttyUSB0" and t.exclusive
    assert t.settings["baudrate"] == 9600 and t.settings["parity"] == "E"
    assert t.settings["stopbits"] == 2 and t.settings["bytesize"] == 7
    assert transport_for("serial:///dev/ttyS0").device == "/dev/ttyS0"  # type: ignore[attr-defined]
    assert isinstance(transport_for("socket://127.0.0.1:4000"), TCPTransport)
    rfc = transport_for("rfc2217://console:7001?baud=9600&timeout=5")
    assert isinstance(rfc, ThreadedSerialTransport)
    assert rfc.target == "rfc2217://console:7001?timeout=5"
    assert isinstance(transport_for("loop://"), ThreadedSerialTransport)


# -- opening --------------------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_open_errors_name_the_device(workdir: Path) -> None:
    missing = workdir / "ttyUSB9"
    with pytest.raises(qproxy.TransportError) as info:
        transport_for(f"serial:{missing}").open()
    assert str(info.value) == f"serial:{missing}: no such device {missing} " \
                              "(unplugged, or the wrong path?)"
    with pytest.raises(qproxy.TransportError, match=r"not a terminal.*use chardev:/dev/null"):
        transport_for("serial:/dev/null").open()


@pytest.mark.timeout(15)
def test_line_is_raw_at_the_baud_rate_and_can_be_reopened(line_rig: Rig) -> None:
    t = transport_for(f"serial:{line_rig.line.b}?baud=9600&xonxoff=0")
    for _ in range(2):  # the same transport opens again after close()
        t.open()
        iflag, oflag, _cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(t.fileno())
        assert ispeed == ospeed == termios.B9600
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert not oflag & termios.OPOST
        assert not iflag & (termios.ICRNL | termios.IXON | termios.ISTRIP)
        assert cc[termios.VMIN] == 1 and cc[termios.VTIME] == 0
        t.close()
        assert t.fileno() == -1


@pytest.mark.timeout(15)
def test_exclusive_access_gives_a_busy_error(line_rig: Rig) -> None:
    device = line_rig.line.b
    first = transport_for(f"serial:{device}")
    first.open()
    try:
        for url in (f"serial:{device}", f"chardev:{device}"):
            with pytest.raises(qproxy.TransportError) as info:
                transport_for(url).open()
            assert f"{device} is busy" in str(info.value), info.value
        with pytest.raises(qproxy.ConnectFailed, match="is busy"):
            qproxy.connect(f"serial:{device}", timeout=5)
        shared = transport_for(f"serial:{device}?exclusive=0")
        shared.open()  # asked for: no lock taken
        shared.close()
    finally:
        first.close()
    again = transport_for(f"serial:{device}")
    again.open()  # free once the first one closed
    again.close()


@pytest.mark.timeout(10)
def test_waiting_for_input_does_not_block_the_hub(line_rig: Rig) -> None:
    t = transport_for(f"serial:{line_rig.line.b}")
    t.open()
    ticks: list[float] = []
    ticker = gevent.spawn(_ticker, ticks)
    reader = gevent.spawn(_outcome, t.read)
    gevent.sleep(0.3)
    assert not reader.ready()  # nothing came: the agent speaks only when spoken to
    t.close()
    reader.join(2)
    ticker.kill()
    assert isinstance(reader.value, qproxy.ConnectionLost)  # close() woke it
    assert len(ticks) >= 15, f"the hub was blocked: only {len(ticks)} ticks in 0.3 s"


# -- a real agent on the line -----------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize("baud", [9600, 115200, 1500000])
def test_calls_over_serial(line_rig: Rig, agents: list[qproxy.Agent], baud: int) -> None:
    agent = connect(f"serial:{line_rig.line.b}?baud={baud}", line_rig)
    agents.append(agent)
    assert agent.call("guest-ping") == {}
    info = agent.info()
    assert info["version"] and any(c["name"] == "guest-sync" for c in info["supported_commands"])
    started = time.monotonic()
    concurrent_syncs(agent, greenlets=20, calls=50)
    print(f"serial baud={baud}: 1000 calls from 20 greenlets in "
          f"{time.monotonic() - started:.2f} s")


@pytest.mark.timeout(40)
def test_noise_on_the_line_is_survived(line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    agent = connect(f"serial:{line_rig.line.b}", line_rig)
    agents.append(agent)
    outcomes = noisy_calls(agent, line_rig)
    stats = agent.channel.stats
    print("outcomes during noise:", dict(outcomes), "stats:", vars(stats))
    assert outcomes["ok"] > 0
    assert stats.protocol_errors + stats.discarded > 0, "the noise never reached qproxy"
    wait_until_answers(agent, 10)
    concurrent_syncs(agent, greenlets=10, calls=20)


@pytest.mark.timeout(30)
def test_unclosed_object_toward_the_agent_is_recovered(
        line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    agent = connect(f"serial:{line_rig.line.b}", line_rig)
    agents.append(agent)
    assert agent.call("guest-ping") == {}
    to_agent = os.open(line_rig.line.b, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(to_agent, UNCLOSED_TO_AGENT)
    finally:
        os.close(to_agent)
    with pytest.raises(qproxy.QProxyError):
        agent.call("guest-sync", {"id": 1}, timeout=0.5)  # swallowed by the agent
    wait_until_answers(agent, 5)


@pytest.mark.timeout(40)
def test_cable_pulled_mid_call_fails_at_once_and_recovers(
        line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    device = line_rig.line.b
    agent = connect(f"serial:{device}", line_rig)
    agents.append(agent)
    assert agent.call("guest-ping") == {}
    assert line_rig.qga.proc is not None
    qga_pid = line_rig.qga.proc.pid
    os.kill(qga_pid, signal.SIGSTOP)  # the agent is slow: calls stay in flight
    try:
        calls = [agent.call_async("guest-sync", {"id": i}) for i in range(10)]
        gevent.sleep(0.2)
        assert not any(c.ready() for c in calls)
        pulled = time.monotonic()
        line_rig.line.kill()
        for c in calls:
            with pytest.raises(qproxy.ConnectionLost):
                c.get(timeout=10)
        failed_after = time.monotonic() - pulled
        assert failed_after < 1.0, f"pending calls failed only after {failed_after:.2f} s"
        # While the cable is out, reopening fails with an error that names the device,
        # and new calls fail at once instead of waiting for their timeout.
        deadline = time.monotonic() + 5
        while "no such device" not in str(agent.channel.last_error):
            assert time.monotonic() < deadline, f"last error: {agent.channel.last_error}"
            gevent.sleep(0.02)
        assert f"serial:{device}: no such device {device}" in str(agent.channel.last_error)
        t0 = time.monotonic()
        with pytest.raises(qproxy.ConnectionLost):
            agent.call("guest-ping", timeout=10)
        assert time.monotonic() - t0 < 1.0
    finally:
        os.kill(qga_pid, signal.SIGCONT)
    line_rig.restart()  # a new cable, and a new agent (the old one holds a dead pty)
    took = wait_until_answers(agent, 15)
    print(f"answered again {took:.2f} s after the line came back; "
          f"reconnects={agent.channel.stats.reconnects}")
    assert agent.channel.stats.reconnects >= 1
    concurrent_syncs(agent, greenlets=5, calls=20)


# -- pyserial URLs --------------------------------------------------------------------------------
@pytest.mark.timeout(40)
@pytest.mark.filterwarnings("ignore:set(Daemon|Name)\\(\\) is deprecated:DeprecationWarning")
def test_rfc2217_through_a_local_port_server(line_rig: Rig, agents: list[qproxy.Agent]) -> None:
    with rfc2217_server(line_rig.line.b) as (server, port):
        url = f"rfc2217://127.0.0.1:{port}?baud=115200"
        ticks: list[float] = []
        ticker = gevent.spawn(_ticker, ticks)
        started = time.monotonic()
        agent = connect(url, line_rig, timeout=15)
        agents.append(agent)
        elapsed = time.monotonic() - started
        ticker.kill()
        # Telnet negotiation ran in a pool thread: the hub kept ticking meanwhile.
        assert len(ticks) >= elapsed / 0.01 * 0.5, (len(ticks), elapsed)
        assert agent.call("guest-ping") == {}
        assert agent.info()["version"]
        concurrent_syncs(agent, greenlets=5, calls=20)
        # The server goes away mid-call: the call fails at once.
        assert line_rig.qga.proc is not None
        os.kill(line_rig.qga.proc.pid, signal.SIGSTOP)
        try:
            pending = agent.call_async("guest-sync", {"id": 1})
            gevent.sleep(0.2)
            t0 = time.monotonic()
            stop_process(server)
            with pytest.raises(qproxy.ConnectionLost):
                pending.get(timeout=10)
            assert time.monotonic() - t0 < 2.0
        finally:
            os.kill(line_rig.qga.proc.pid, signal.SIGCONT)


@pytest.mark.timeout(20)
def test_socket_url_reaches_qemu_ga(qga_socket: Path, agents: list[qproxy.Agent]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = subprocess.Popen(
        [socat_binary(), f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
         f"UNIX-CONNECT:{qga_socket}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        agent = None
        deadline = time.monotonic() + 5
        while agent is None:
            try:
                agent = qproxy.connect(f"socket://127.0.0.1:{port}", timeout=5)
            except qproxy.ConnectFailed:
                if relay.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"socat relay on port {port} did not work", pytrace=False)
                time.sleep(0.05)
        agents.append(agent)
        assert agent.call("guest-ping") == {}
        concurrent_syncs(agent, greenlets=5, calls=20)
    finally:
        stop_process(relay)


@pytest.mark.timeout(20)
def test_loop_round_trip_is_cooperative() -> None:
    t = transport_for("loop://")
    for _ in range(2):  # opens again after close()
        t.open()
        t.write(b"\xff{\"return\": {}}\n")
        assert t.read() == b"\xff{\"return\": {}}\n"
        # More than pyserial's 4096-byte loop buffer: the writer blocks (in its thread)
        # until the reader drains; the hub keeps running all along.
        blob = bytes(range(256)) * 400
        ticks: list[float] = []
        ticker = gevent.spawn(_ticker, ticks)
        writer = gevent.spawn(t.write, blob)
        got = b""
        started = time.monotonic()
        while len(got) < len(blob):
            got += t.read()
        writer.join(5)
        ticker.kill()
        assert writer.successful() and got == blob
        assert len(ticks) >= (time.monotonic() - started) / 0.01 * 0.3
        # close() wakes a greenlet blocked in read() at once.
        reader = gevent.spawn(_outcome, t.read)
        gevent.sleep(0.1)
        t0 = time.monotonic()
        t.close()
        reader.join(2)
        assert isinstance(reader.value, qproxy.ConnectionLost)
        assert time.monotonic() - t0 < 0.5
        with pytest.raises(qproxy.ConnectionLost):
            t.write(b"x")
