"""One channel per agent: owns the byte stream, routes replies to the calls that wait.

The channel keeps the transport open (reopening it with capped, jittered exponential
backoff when it drops), runs the handshake on every new connection, gives every
request a channel-unique ``id`` and routes each reply to the call that carries it.

Life of a connection::

    CONNECTING -> SYNCING -> READY -> DISCONNECTED -> CONNECTING ... -> CLOSED

Calls made while CONNECTING or SYNCING wait in the write queue; calls made while
DISCONNECTED fail at once with :class:`~qproxy.errors.ConnectionLost`; when a
connection breaks every pending and queued call fails with it immediately.

Replies are matched by ``id``.  An agent that does not echo ids (very old qemu-ga)
is detected on its first id-less reply; the channel then matches replies in order
(first in, first out) and re-syncs after any call times out.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from ..errors import (
    AgentReset,
    ChannelClosed,
    ConnectFailed,
    ConnectionLost,
    ProtocolError,
    QProxyError,
)
from ..transports import Transport, transport_for
from . import xport
from .call import Call
from .decoder import DEFAULT_MAX_SIZE, Decoder
from .handshake import check_handshake, is_stray_parse_error
from .router import Router
from .stats import ChannelStats
from .sync import Synchronizer
from .writer import Writer

__all__ = ["Call", "Channel", "State"]


class State(enum.Enum):
    """Where a channel is in its life."""

    CONNECTING = "connecting"
    SYNCING = "syncing"
    READY = "ready"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


def _backoff(attempt: int, base: float, cap: float) -> float:
    return float(min(cap, base * (2 ** min(attempt, 30))) * random.uniform(0.5, 1.0))


class Channel:
    """The one shared connection to one agent.

    ``target`` is an agent URL (``unix:/run/qga.sock``) or an unopened
    :class:`~qproxy.transports.Transport`.  Call :meth:`start`, then :meth:`submit`
    requests from any number of greenlets.
    """

    def __init__(self, target: str | Transport, *,
                 handshake: str = "sync-delimited",
                 reconnect: bool = True,
                 retry_first_connect: bool = False,
                 sync_timeout: float = 0.5,
                 backoff_base: float = 0.1,
                 backoff_cap: float = 5.0,
                 max_message_size: int = DEFAULT_MAX_SIZE,
                 name: str | None = None,
                 logger: logging.Logger | None = None) -> None:
        self._target = target
        self.url = target if isinstance(target, str) else target.url
        if isinstance(target, str):
            transport_for(target)  # validate the URL now, so errors surface at once
        self.handshake = check_handshake(handshake)
        self._xport = self.handshake == xport.XPORT_2011
        self.reconnect = reconnect
        self.retry_first_connect = retry_first_connect
        self.sync_timeout = sync_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_message_size = max_message_size
        label = name or self.url
        self.log = logger or logging.getLogger("qproxy.channel." + label.replace(".", "_"))
        self.stats = ChannelStats()
        self.state = State.CONNECTING
        self.last_error: QProxyError | None = None
        self.router = Router(self.stats, self.log)
        self.writer = Writer(self.stats, self.log)
        self._ready = Event()
        self._transport: Transport | None = None
        self.sync = Synchronizer(self.handshake, router=self.router, stats=self.stats,
                                 log=self.log, enqueue=self.writer.send,
                                 is_ready=lambda: self.state is State.READY,
                                 first_wait=sync_timeout, max_wait=backoff_cap)
        self._runner: gevent.Greenlet | None = None
        self._connected_once = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Channel:
        """Start connecting in the background; returns self."""
        if self._runner is None:
            self._runner = gevent.spawn(self._run)
        return self

    def wait_ready(self, timeout: float | None) -> None:
        """Wait until the handshake completes; raise :class:`ConnectFailed` if it does not."""
        self.start()
        self._ready.wait(timeout)
        if self.state is State.READY:
            return
        if self.state is State.CLOSED and isinstance(self.last_error, ChannelClosed):
            raise self.last_error
        reason = f": {self.last_error}" if self.last_error else ""
        if self._transport is not None and self.state is State.SYNCING:
            reason = (f": connected, but the agent did not answer {self.handshake} within "
                      f"{timeout:g} s (is the agent running on the other end?)")
        raise ConnectFailed(f"could not reach the agent at {self.url}{reason}")

    @property
    def ready(self) -> bool:
        """True while the channel is connected and synchronised."""
        return self.state is State.READY

    def close(self) -> None:
        """Close the channel: pending calls fail with :class:`ChannelClosed`."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        exc = ChannelClosed(f"the channel to {self.url} was closed")
        self.last_error = exc
        self._fail_all(exc)
        runner, self._runner = self._runner, None
        if runner is not None and runner is not gevent.getcurrent():
            runner.kill(block=False)
        if self._transport is not None:
            self._transport.close()
        self._ready.set()

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(message)`` for every message that answers no call (events).

        It runs in the event loop: it must not block.
        """
        self.router.subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling ``callback``."""
        if callback in self.router.subscribers:
            self.router.subscribers.remove(callback)

    @property
    def echoes_ids(self) -> bool:
        """False once the agent answered a request without its id (replies in order)."""
        return self.router.echoes_ids

    # -- calls ----------------------------------------------------------------------
    def submit(self, request: dict[str, Any],
               on_done: Callable[[Call], None] | None = None) -> Call:
        """Send ``request`` (a dict with ``execute``); its ``id`` is replaced by ours.

        The returned :class:`Call` receives the agent's reply dict, or fails with
        :class:`ConnectionLost`.  Never blocks.  ``on_done(call)``, if given, is called
        as soon as the call completes, from the event loop (it must not block); it is
        cheaper than ``call.rawlink()`` for code that handles many calls.
        """
        call = self.router.new_call(str(request.get("execute")), on_done)
        if self._accepts(call):
            self._launch(call, self.router.encode_request(call, request))
        return call

    def submit_command(self, command: str, arguments: dict[str, Any] | None = None,
                       on_done: Callable[[Call], None] | None = None) -> Call:
        """:meth:`submit` for ``{"execute": command, "arguments": arguments}``.

        The request is encoded without building a dict, from a cached head per command.
        """
        call = self.router.new_call(command, on_done)
        if self._accepts(call):
            self._launch(call, self.router.encode_command(call, arguments))
        return call

    def _accepts(self, call: Call) -> bool:
        """False (and the call failed) while no connection is coming."""
        if self.state is State.DISCONNECTED or self.state is State.CLOSED:
            call.fail(self._unavailable())
            return False
        return True

    def _launch(self, call: Call, data: bytes) -> None:
        self.router.add(call)
        self.writer.send(data)

    def abandon(self, call: Call, *, timed_out: bool = True) -> None:
        """The caller gave up: drop the late reply when it comes.

        ``timed_out=False`` is for callers that simply went away (a client that
        disconnected): no re-sync is needed on their account.
        """
        if call.ready():
            return
        self.router.abandon(call)
        if timed_out:
            self.stats.timeouts += 1
            # The agent may be stuck on half a request (an unclosed "{" from line noise
            # keeps its lexer waiting): a 0xFF re-sync clears that.
            self.sync.resync_soon("a call timed out; re-synchronising in case the agent is stuck")
        elif not self.router.echoes_ids:
            self.sync.resync_soon("a call was abandoned while replies are matched in order")

    def _unavailable(self) -> ConnectionLost:
        if self.state is State.CLOSED:
            return ChannelClosed(f"the channel to {self.url} is closed")
        return ConnectionLost(f"the agent at {self.url} is not connected "
                              f"(reconnecting; last error: {self.last_error})")

    # -- reading and routing ----------------------------------------------------------
    def _on_value(self, value: Any) -> None:
        if type(value) is not dict:
            self.stats.unexpected += 1
            self.log.warning("ignoring a message that is not an object: %.200r", value)
            return
        if self._xport and xport.event_of(value) is not None:
            self._on_xport_event(value)
            return
        if self.state is not State.READY:
            if not self.sync.answers(value):
                self.stats.discarded += 1
            return
        if "id" not in value:
            if self.sync.answers(value):
                return
            if is_stray_parse_error(value):
                self.stats.discarded += 1
                self.log.debug("agent reported a parse error: %s", value["error"].get("desc"))
                if self.sync.marker is None:  # not the answer to our own 0xFF
                    self.sync.resync_soon("the agent could not parse what it received")
                return
        self.router.route(value)

    def _on_xport_event(self, message: dict[str, Any]) -> None:
        """The 2011 handshake: ack every ``guest_init``; one mid-session is a restart."""
        name = xport.event_of(message)
        if name != "guest_init":
            self.log.debug("ignoring transport event %r", name)
            return
        sid = xport.session_of(message)
        ack = xport.host_ack(sid)
        if self.state is State.READY:
            self.stats.agent_resets += 1
            self.log.warning("the agent restarted (guest_init, session %r): cancelling %d "
                             "calls", sid, len(self.router.pending))
            self._fail_all(AgentReset(f"the agent at {self.url} restarted (new session "
                                      f"{sid!r}); the call was cancelled"))
            self.writer.send(ack)
        else:
            self.writer.send_first(ack)  # before anything queued meanwhile
            self.sync.agent_started()

    def _on_protocol_error(self, exc: ProtocolError) -> None:
        self.stats.protocol_errors += 1
        self.log.warning("protocol error from the agent: %s", exc)
        self.sync.resync_soon(str(exc))

    # -- the connection manager -------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while self.state is not State.CLOSED:
            self.state = State.CONNECTING
            transport = (self._target if isinstance(self._target, Transport)
                         else transport_for(self._target))
            try:
                transport.open()
            except QProxyError as exc:
                self.last_error = exc
                self.log.info("cannot open %s: %s", self.url, exc)
                if not self._connected_once and not self.retry_first_connect:
                    self.state = State.DISCONNECTED
                    self._fail_all(ConnectFailed(str(exc)))
                    self._ready.set()
                    return
                if not self.reconnect and self._connected_once:
                    break
                self.state = State.DISCONNECTED
                self._fail_all(self._unavailable())
                gevent.sleep(_backoff(attempt, self.backoff_base, self.backoff_cap))
                attempt += 1
                continue
            reason, reached_ready = self._serve(transport)
            if self.state is State.CLOSED:
                return
            self.last_error = ConnectionLost(f"lost the agent at {self.url}: {reason}")
            self.log.warning("%s", self.last_error)
            self.state = State.DISCONNECTED
            self._ready.clear()
            self._fail_all(self.last_error)
            if not self.reconnect:
                break
            self.stats.reconnects += 1
            # A connection that never got READY (a port with no peer) backs off further.
            attempt = 0 if reached_ready else attempt + 1
            gevent.sleep(_backoff(attempt, self.backoff_base, self.backoff_cap))
        if self.state is not State.CLOSED:
            self.state = State.DISCONNECTED
        self._ready.set()

    def _serve(self, transport: Transport) -> tuple[str, bool]:
        """Use one open transport until it breaks; return why it ended."""
        self._transport = transport
        self.state = State.SYNCING
        decoder = Decoder(self._on_value, max_size=self.max_message_size,
                          on_reset=self.sync.on_reset, on_error=self._on_protocol_error,
                          objects_only=True, logger=self.log)
        self.router.new_connection(echoes_ids=not self._xport)
        ended: AsyncResult = AsyncResult()
        stats = self.stats
        feed = decoder.feed

        def on_data(data: bytes) -> None:
            stats.bytes_in += len(data)
            feed(data)

        def on_end(reason: str) -> None:
            if not ended.ready():
                ended.set(reason)

        transport.start_reading(on_data, on_end)
        writer = gevent.spawn(self.writer.run, transport)
        syncer = gevent.spawn(self.sync.handshake_on, transport)
        try:
            gevent.wait([ended, syncer], count=1)
            if syncer.successful() and syncer.value and not ended.ready():
                self.state = State.READY
                self._connected_once = True
                self.log.info("connected to %s", self.url)
                self._ready.set()
                self.writer.open(transport)
                return str(ended.get()), True
            if syncer.ready() and not syncer.successful():
                return f"handshake failed: {syncer.exception}", False
            return (str(ended.get()) if ended.ready() else "closed"), False
        finally:
            syncer.kill(block=False)
            self.sync.stop()
            self.writer.close()
            writer.kill(block=False)
            transport.close()
            self._transport = None

    def _fail_all(self, exc: ConnectionLost) -> None:
        self.writer.clear()
        self.router.fail_all(exc)
