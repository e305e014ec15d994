"""The reference agent: serves the guest-agent protocol on a listening socket.

It behaves like ``qemu-ga -m unix-listen``: each connection is a session whose
requests run one after another; ids are echoed; 0xFF resets the lexer and is answered
with the id-less ``JSON parse error, stray`` error; malformed input gets the same kind
of id-less error; ``guest-sync-delimited`` replies are preceded by 0xFF.  Faults can be
switched on for tests (``echo_ids=False`` plays a very old agent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent.queue import Queue
from gevent.server import StreamServer

from ..core.decoder import Decoder
from ..errors import InvalidURL, ProtocolError
from ..transports.registry import split_url
from ..transports.sockets import parse_host_port
from .commands import Command, CommandError, build_commands

log = logging.getLogger("qproxy.refagent")

_STRAY = {"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\ufffd'"}}
_SENTINEL_FF = object()


class _ParseError:
    def __init__(self, desc: str) -> None:
        self.desc = desc


def listen_socket(url: str) -> socket.socket:
    """Bind and listen on ``unix:PATH`` or ``tcp:HOST:PORT``."""
    scheme, rest, _ = split_url(url)
    if scheme == "unix":
        path = rest[2:] if rest.startswith("//") else rest
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    elif scheme == "tcp":
        host, port = parse_host_port(rest, url)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    else:
        raise InvalidURL(f"the reference agent listens on unix: or tcp:, not {scheme}:")
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ReferenceAgent:
    """A guest agent for tests and demos.  ``start()`` it, ``stop()`` it."""

    def __init__(self, listen: str, *, echo_ids: bool = True,
                 extra_commands: list[Command] | None = None) -> None:
        self.listen_url = listen
        self.echo_ids = echo_ids
        self.commands = build_commands(extra_commands)
        self.requests = 0
        self.sessions = 0
        self._server: StreamServer | None = None
        self._on_request: Callable[[dict[str, Any]], None] | None = None

    @property
    def address(self) -> Any:
        """The bound address (a path, or ``(host, port)``)."""
        assert self._server is not None
        return self._server.socket.getsockname()

    def start(self) -> ReferenceAgent:
        """Bind and start serving in the background."""
        self._server = StreamServer(listen_socket(self.listen_url), self._session)
        self._server.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve until stopped."""
        if self._server is None:
            self.start()
        assert self._server is not None
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and remove a Unix socket file."""
        if self._server is None:
            return
        scheme, rest, _ = split_url(self.listen_url)
        self._server.stop(timeout=1)
        self._server = None
        if scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rest[2:] if rest.startswith("//") else rest)

    # -- one session ------------------------------------------------------------------
    def _session(self, sock: socket.socket, address: Any) -> None:
        self.sessions += 1
        inbox: Queue = Queue()

        def bad_input(exc: ProtocolError) -> None:
            inbox.put(_ParseError(f"JSON parse error, {exc}"))

        decoder = Decoder(inbox.put, on_reset=lambda: inbox.put(_SENTINEL_FF),
                          on_error=bad_input, logger=log)
        worker = gevent.spawn(self._work, sock, inbox)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                decoder.feed(data)
        except OSError:
            pass
        finally:
            inbox.put(None)
            worker.join(timeout=5)
            worker.kill()

    def _work(self, sock: socket.socket, inbox: Queue) -> None:
        for item in inbox:
            if item is None:
                return
            try:
                if item is _SENTINEL_FF:
                    sock.sendall(json.dumps(_STRAY).encode() + b"\n")
                    continue
                reply = self._handle(item)
                if reply is not None:
                    sock.sendall(reply)
            except OSError:
                return

    def _handle(self, request: Any) -> bytes | None:
        if isinstance(request, _ParseError):
            error = {"error": {"class": "GenericError", "desc": request.desc}}
            return json.dumps(error).encode() + b"\n"
        self.requests += 1
        if type(request) is not dict or not isinstance(request.get("execute"), str):
            reply: dict[str, Any] = {"error": {"class": "GenericError",
                                               "desc": "QMP input must be a JSON object "
                                                       "with an 'execute' string"}}
            return json.dumps(reply).encode() + b"\n"
        name = request["execute"]
        command = self.commands.get(name)
        arguments = request.get("arguments", {})
        if command is None:
            reply = {"error": {"class": "CommandNotFound",
                               "desc": f"The command {name} has not been found"}}
        elif type(arguments) is not dict:
            reply = {"error": {"class": "GenericError", "desc": "'arguments' must be an object"}}
        else:
            try:
                reply = {"return": command.handler(arguments)}
            except CommandError as exc:
                reply = {"error": {"class": exc.error_class, "desc": exc.desc}}
            if not command.success_response and "error" not in reply:
                return None
        if self.echo_ids and "id" in request:
            reply["id"] = request["id"]
        data = json.dumps(reply).encode() + b"\n"
        if name == "guest-sync-delimited":
            data = b"\xff" + data
        return data
