"""A scripted fake agent for faults a real one cannot produce on demand.

It answers the sync handshake like qemu-ga, then hands every other request to a
``respond(request, write)`` function the test supplies, which may write anything.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gevent.server import StreamServer

from qproxy.core.decoder import Decoder

Responder = Callable[[dict[str, Any], Callable[[bytes], None]], None]


def reply(request: dict[str, Any], value: Any) -> bytes:
    """A success reply that echoes the request's id."""
    out: dict[str, Any] = {"return": value}
    if "id" in request:
        out["id"] = request["id"]
    return json.dumps(out).encode() + b"\n"


class FakePeer:
    """A Unix-socket agent whose answers are scripted by ``respond``."""

    def __init__(self, path: Path, respond: Responder) -> None:
        self.path = path
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.listen(16)
        sock.setblocking(False)  # StreamServer accepts in a loop: a blocking one stalls the hub
        self.server = StreamServer(sock, self._handle)

    def start(self) -> FakePeer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock: socket.socket, _address: Any) -> None:
        self.connections += 1

        def write(data: bytes) -> None:
            sock.sendall(data)

        def on_value(request: Any) -> None:
            if request.get("execute") in ("guest-sync-delimited", "guest-sync"):
                data = reply(request, request["arguments"]["id"])
                write((b"\xff" if request["execute"] == "guest-sync-delimited" else b"") + data)
                return
            self.requests.append(request)
            self.respond(request, write)

        decoder = Decoder(on_value, objects_only=True)
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            decoder.feed(data)
