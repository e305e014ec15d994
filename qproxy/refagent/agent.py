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
import random
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent.queue import Queue
from gevent.server import StreamServer

from ..core import xport
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

    def __init__(self, listen: str, *, echo_ids: bool = True, xport_2011: bool = False,
                 extra_commands: list[Command] | None = None) -> None:
        self.listen_url = listen
        self.xport_2011 = xport_2011
        self.echo_ids = echo_ids and not xport_2011
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
        if self.xport_2011:
            XportSession(self, sock).run()
            return
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


class XportSession:
    """A session in the 2011 protocol: ``guest_init`` first, nothing until ``host_ack``.

    ``qproxy-restart {"after": S}`` (handled as soon as it is read, not in turn) plays an
    agent restart S seconds later: a new session id, a new ``guest_init``, and the work
    of the old session is dropped unanswered.
    """

    def __init__(self, agent: ReferenceAgent, sock: socket.socket) -> None:
        self.agent = agent
        self.sock = sock
        self.epoch = 0
        self.sid = 0
        self.acked = False
        self.inbox: Queue = Queue()

    def run(self) -> None:
        decoder = Decoder(self._on_value, objects_only=True, logger=log)
        worker = gevent.spawn(self._work)
        try:
            self._init()
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                decoder.feed(data)
        except OSError:
            pass
        finally:
            self.inbox.put(None)
            worker.join(timeout=5)
            worker.kill()

    def _init(self) -> None:
        self.epoch += 1
        self.sid = random.randint(1, 2**31 - 1)
        self.acked = False
        self.sock.sendall(xport.event("guest_init", self.sid))

    def _on_value(self, value: dict[str, Any]) -> None:
        if not self.acked:
            if xport.event_of(value) == "host_ack" and xport.session_of(value) == self.sid:
                self.acked = True
            return  # everything before the ack is ignored
        if value.get("execute") == "qproxy-restart":
            after = value.get("arguments", {}).get("after", 0)
            gevent.spawn_later(float(after), self._restart)
            return
        self.inbox.put((self.epoch, value))

    def _restart(self) -> None:
        with contextlib.suppress(OSError):
            self._init()

    def _work(self) -> None:
        for item in self.inbox:
            if item is None:
                return
            epoch, request = item
            if epoch != self.epoch:
                continue  # queued before a restart
            reply = self.agent._handle(request)
            if reply is None or epoch != self.epoch:
                continue  # answered after a restart: that session is gone
            try:
                self.sock.sendall(reply)
            except OSError:
                return

