"""Unix and TCP transports against real listeners."""

from __future__ import annotations

import socket
from pathlib import Path

import gevent
import pytest
from gevent.server import StreamServer

import qproxy
from qproxy.errors import ConnectionLost, TransportError
from qproxy.transports import transport_for


def _echo_server(listener: socket.socket) -> StreamServer:
    def handle(sock: socket.socket, _addr: object) -> None:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)

    listener.setblocking(False)
    server = StreamServer(listener, handle)
    server.start()
    return server


@pytest.mark.timeout(20)
def test_tcp_round_trip_and_big_writes() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    server = _echo_server(listener)
    port = listener.getsockname()[1]
    try:
        t = transport_for(f"tcp:127.0.0.1:{port}")
        t.open()
        payload = bytes(range(256)) * 40_000  # 10 MB: forces partial writes and waits
        writer = gevent.spawn(t.write, payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = t.read()
            assert chunk
            received += chunk
        writer.get(timeout=10)
        assert bytes(received) == payload
        t.close()
        with pytest.raises(ConnectionLost):
            t.read()
    finally:
        server.stop()


@pytest.mark.timeout(20)
def test_close_wakes_a_blocked_reader(workdir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(workdir / "e.sock"))
    listener.listen(1)
    server = _echo_server(listener)
    try:
        t = transport_for(f"unix:{workdir}/e.sock")
        t.open()
        reader = gevent.spawn(t.read)
        gevent.sleep(0.05)
        t.close()
        with pytest.raises(ConnectionLost):
            reader.get(timeout=5)
        # A transport can be opened again after close (the channel reconnects this way).
        t.open()
        t.write(b"again")
        assert t.read() == b"again"
        t.close()
    finally:
        server.stop()


@pytest.mark.timeout(20)
def test_refused_and_missing(workdir: Path) -> None:
    with pytest.raises(TransportError) as err:
        transport_for(f"unix:{workdir}/none.sock").open()
    assert "no such socket" in str(err.value).lower()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(TransportError) as err2:
        transport_for(f"tcp:127.0.0.1:{port}").open()
    assert "nothing listens" in str(err2.value)


@pytest.mark.timeout(30)
def test_tcp_to_a_real_agent_through_socat(qga_socket: Path) -> None:
    """qemu-ga only listens on Unix sockets: socat bridges TCP loopback to it."""
    import subprocess

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    bridge = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                               f"UNIX-CONNECT:{qga_socket}"])
    try:
        agent = qproxy.connect(f"tcp:127.0.0.1:{port}", wait=True, timeout=10)
        with agent:
            assert agent.call("guest-ping") == {}
            assert agent.call("guest-sync", {"id": 3}) == 3
    finally:
        bridge.kill()
        bridge.wait()
