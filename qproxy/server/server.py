"""The multi-client server: many client sessions, one agent channel.

``Server(agent_url, ["unix:/run/qproxy.sock"]).start()`` binds its listeners, connects
to the agent, then accepts clients, one :class:`~qproxy.server.session.Session` (one
greenlet) each, all multiplexed onto the one :class:`~qproxy.core.channel.Channel`.

:meth:`Server.stop` shuts down in order: the listeners close first (Unix socket files
are removed), then every session stops reading and its calls in flight get until the
grace period ends to finish — those that do not are answered with an error — and last
the channel closes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.server import StreamServer

from ..core.channel import Channel, State
from ..core.decoder import DEFAULT_MAX_SIZE
from ..transports.registry import split_url
from .listener import DEFAULT_MODE, Listener, bind
from .policy import CommandPolicy, patterns
from .session import DEFAULT_LINGER, DEFAULT_MAX_IN_FLIGHT, Session

log = logging.getLogger("qproxy.server")

#: Seconds calls in flight may still finish after a shutdown was asked for.
DEFAULT_GRACE = 5.0


class Server:
    """Serve one agent to many clients.

    ``agent`` is an agent URL or a :class:`Channel` (not started, or started: the server
    closes it on :meth:`stop` either way).  ``listen`` lists the URLs to listen on.
    """

    def __init__(self, agent: str | Channel, listen: Sequence[str], *,
                 mode: int = DEFAULT_MODE,
                 handshake: str = "sync-delimited",
                 wait: bool = False,
                 connect_timeout: float = 10.0,
                 max_message_size: int = DEFAULT_MAX_SIZE,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 grace: float = DEFAULT_GRACE,
                 linger: float = DEFAULT_LINGER,
                 allow: Sequence[str] | None = None,
                 deny: Sequence[str] = ()) -> None:
        if not listen:
            raise ValueError("the server needs at least one address to listen on")
        allowed = patterns(allow) or None
        denied = patterns(deny)
        base = CommandPolicy(allowed, denied) if allowed is not None or denied else None
        # Per listener: the server-wide policy refined by the URL's allow=/deny= options.
        self.policies = [CommandPolicy.combine(base, split_url(url)[2]) for url in listen]
        self.channel = agent if isinstance(agent, Channel) else Channel(
            agent, handshake=handshake, retry_first_connect=wait,
            max_message_size=max_message_size, name="agent",
            logger=logging.getLogger("qproxy.server.agent"))
        self.listen_urls = list(listen)
        self.mode = mode
        self.wait = wait
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.max_in_flight = max_in_flight
        self.grace = grace
        self.linger = linger
        self.listeners: list[Listener] = []
        self.sessions: set[Session] = set()
        #: Sessions served so far.
        self.session_count = 0
        self._servers: list[StreamServer] = []
        self._numbers = itertools.count(1)
        self._stopping = False

    @property
    def urls(self) -> list[str]:
        """Where the server listens (actual ports for ``tcp:...:0``)."""
        return [listener.url for listener in self.listeners]

    def start(self) -> Server:
        """Bind, connect to the agent, start accepting.  Raises :class:`~qproxy.errors.QProxyError`.

        Clients that connect while the agent is awaited wait in the listen backlog.
        """
        try:
            for url in self.listen_urls:
                self.listeners.append(bind(url, self.mode))
            self.channel.start()
            self.channel.wait_ready(None if self.wait else self.connect_timeout)
        except BaseException:
            self._close_listeners()
            self.channel.close()
            raise
        for listener, policy in zip(self.listeners, self.policies, strict=True):
            server = StreamServer(listener.socket, functools.partial(self._handle, policy))
            server.start()
            self._servers.append(server)
            log.info("listening on %s%s", listener.url, f" ({policy})" if policy else "")
        return self

    def stop(self, grace: float | None = None) -> None:
        """Close the listeners, let calls in flight finish for ``grace`` s, close the agent."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.grace if grace is None else grace
        for server in self._servers:
            server.close()
        self._close_listeners()
        sessions = list(self.sessions)
        if sessions:
            in_flight = sum(s.in_flight for s in sessions)
            log.info("stopping: %d sessions, %d requests in flight (grace %.1f s)",
                     len(sessions), in_flight, grace)
            deadline = time.monotonic() + grace
            for session in sessions:
                session.shutdown(deadline)
            gevent.wait([s.done for s in sessions], timeout=grace + 2.0)
        self.channel.close()
        log.info("stopped after %d sessions", self.session_count)

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()

    def _handle(self, policy: CommandPolicy | None, sock: socket.socket,
                address: Any) -> None:
        number = next(self._numbers)
        self.session_count += 1
        peer = f" from {address[0]}:{address[1]}" if isinstance(address, tuple) else ""
        session = Session(sock, self.channel, name=f"session {number}{peer}",
                          max_message_size=self.max_message_size,
                          max_in_flight=self.max_in_flight, linger=self.linger,
                          policy=policy)
        if sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sessions.add(session)
        if self._stopping:
            session.shutdown(time.monotonic())
        try:
            session.run()
        except Exception:
            log.exception("%s failed", session.name)
        finally:
            self.sessions.discard(session)

    @property
    def agent_ready(self) -> bool:
        """Whether the agent is connected right now."""
        return self.channel.state is State.READY

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

