"""One client session: a client speaks the agent protocol as if it talked to qemu-ga.

A session owns one client socket and two greenlets:

* the **reader** (the server's handler greenlet) decodes the client's bytes with the
  same :class:`~qproxy.core.decoder.Decoder` the channel uses, answers what it can
  locally (``guest-sync``, ``guest-sync-delimited``, parse errors, 0xFF) and forwards
  every other request through :meth:`Channel.submit`, remembering the client's own id;
* the **writer** writes the replies in the order the requests came, as soon as the
  first unanswered one is answered, batching every reply that is ready into one write.

Every request takes one *slot* in an ordered queue: either the bytes of a local answer,
or ``(call, client_id)`` for a forwarded one.  The reader stops reading while
``max_in_flight`` slots wait (backpressure); a client that does not read its replies
stops the writer, which in turn stops the reader.

When the client goes away its unanswered calls are abandoned, so their late replies are
dropped by the channel.  A client that only half-closes (``socat`` after its input
ended) still gets the replies it waits for, for up to ``linger`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections import deque
from itertools import islice
from typing import Any, Final

import gevent
from gevent.event import Event

from ..core.channel import Call, Channel
from ..core.decoder import DEFAULT_MAX_SIZE, Decoder
from ..errors import ConnectionLost, MessageTooLarge, ProtocolError
from . import replies
from .replies import NO_ID, NO_SUCCESS_RESPONSE

log = logging.getLogger("qproxy.server.session")
#: Where the decoder reports what clients send that is not JSON.
_input_log = logging.getLogger("qproxy.server.input")

#: Largest read from a client at once.
RECV_SIZE: Final = 256 * 1024
#: Requests a session may have in flight before the server stops reading from it.
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: Seconds a half-closed client is still served its pending replies.
DEFAULT_LINGER: Final = 30.0

_SYNC_COMMANDS: Final = frozenset({"guest-sync", "guest-sync-delimited"})
_SHUTDOWN_DESC: Final = ("the server is shutting down; no reply came in time (the command "
                         "may still run in the guest)")

Slot = bytes | tuple[Call, Any]


class Session:
    """One client connection, multiplexed onto the shared :class:`Channel`.

    Create it for an accepted socket and call :meth:`run` in the greenlet that serves
    the connection; it returns when the session is over.  :meth:`shutdown` asks it to
    finish (from another greenlet).
    """

    def __init__(self, sock: socket.socket, channel: Channel, *, name: str,
                 max_message_size: int = DEFAULT_MAX_SIZE,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 linger: float = DEFAULT_LINGER) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.sock = sock
        self.channel = channel
        self.name = name
        self.max_in_flight = max_in_flight
        self.linger = linger
        #: Requests received (forwarded or answered locally).
        self.requests = 0
        #: Why the session ended (set when it does).
        self.end_reason: str | None = None
        self.done = Event()
        self._slots: deque[Slot] = deque()
        self._low_water = max(1, max_in_flight // 2)
        self._wake = Event()      # the writer waits for a slot
        self._room = Event()      # the reader waits for the writer to drain
        self._hurry = Event()     # shutdown() shortened the deadline
        self._idle = False
        self._throttled = False
        self._eof = False
        self._writing = False
        self._stop_reading: str | None = None
        self._write_error: str | None = None
        self._deadline = float("inf")
        self._fail_desc: str | None = None
        self._decoder = Decoder(self._on_value, max_size=max_message_size,
                                on_reset=self._on_reset, on_error=self._on_error,
                                logger=_input_log)

    # -- public ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve the client until it leaves or the session is shut down."""
        started = time.monotonic()
        log.info("%s: opened", self.name)
        writer = gevent.spawn(self._write_loop)
        try:
            reason = self._read_loop()
            self._finish(writer, reason)
        finally:
            writer.kill(block=False)
            self._abandon_rest()
            self.done.set()
        log.info("%s: closed after %d requests in %.1f s (%s)", self.name, self.requests,
                 time.monotonic() - started, self.end_reason)

    def shutdown(self, deadline: float, desc: str = _SHUTDOWN_DESC) -> None:
        """Stop reading; pending calls may finish until ``deadline`` (monotonic), then fail."""
        self._fail_desc = desc
        self._deadline = min(self._deadline, deadline)
        if self._stop_reading is None:
            self._stop_reading = "the server is shutting down"
        self._room.set()
        self._hurry.set()
        self._shutdown_socket(socket.SHUT_RD)

    @property
    def in_flight(self) -> int:
        """Requests received whose replies are not written yet."""
        return len(self._slots)

    # -- reading --------------------------------------------------------------------
    def _read_loop(self) -> str:
        recv = self.sock.recv
        feed = self._decoder.feed
        slots = self._slots
        try:
            while self._stop_reading is None:
                data = recv(RECV_SIZE)
                if not data:
                    return self._stop_reading or "the client closed the connection"
                feed(data)
                if len(slots) >= self.max_in_flight and self._stop_reading is None:
                    self._wait_for_room()
        except OSError as exc:
            return self._stop_reading or self._write_error or f"read failed: {exc}"
        return self._stop_reading

    def _wait_for_room(self) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %d requests in flight; pausing reads", self.name, len(self._slots))
        while len(self._slots) > self._low_water and self._stop_reading is None:
            self._room.clear()
            self._throttled = True
            self._room.wait()
        self._throttled = False

    def _push(self, data: bytes) -> None:
        self._slots.append(data)
        if self._idle:
            self._wake.set()

    def _on_value(self, value: Any) -> None:
        if self._stop_reading is not None:
            return
        self.requests += 1
        if type(value) is dict:
            command = value.get("execute")
            if type(command) is str:
                client_id = value.pop("id", NO_ID)
                if command in _SYNC_COMMANDS:
                    local = replies.sync_reply(command, value, client_id)
                    if local is not None:
                        self._push(local)
                        return
                self._slots.append((self.channel.submit(value), client_id))
                if self._idle:
                    self._wake.set()
                return
        self._push(replies.invalid_request(value))

    def _on_reset(self) -> None:
        if self._stop_reading is None:
            self._push(replies.STRAY_FF)

    def _on_error(self, exc: ProtocolError) -> None:
        if self._stop_reading is not None:
            return
        if isinstance(exc, MessageTooLarge):
            log.warning("%s: %s; closing the session", self.name, exc)
            self._push(replies.error("GenericError", f"qproxy: {exc}; closing the connection"))
            self._stop_reading = "the client sent an over-size message"
            return
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %s", self.name, exc)
        self._push(replies.parse_error(str(exc)))

    # -- writing --------------------------------------------------------------------
    def _write_loop(self) -> None:
        slots = self._slots
        sendall = self.sock.sendall
        render = self._render
        try:
            while True:
                if not slots:
                    if self._eof:
                        return
                    self._wait_idle()
                    continue
                head = slots[0]
                if type(head) is tuple and not head[0].ready():
                    if head[0].command in NO_SUCCESS_RESPONSE:
                        self._wait_no_reply(head[0])
                        continue
                    head[0].wait()
                chunks: list[bytes] = []
                while slots:
                    slot = slots[0]
                    if isinstance(slot, bytes):
                        chunks.append(slot)
                    else:
                        call, client_id = slot
                        if not call.ready():
                            break
                        data = render(call, client_id)
                        if data is not None:
                            chunks.append(data)
                    slots.popleft()
                if self._throttled and len(slots) <= self._low_water:
                    self._room.set()
                if not chunks:
                    continue
                self._writing = True
                sendall(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                self._writing = False
        except OSError as exc:
            self._write_error = f"write failed: {exc}"
            self._writing = False
            self._abandon_rest()
            if self._stop_reading is None:
                self._stop_reading = self._write_error
            self._room.set()
            self._shutdown_socket(socket.SHUT_RDWR)

    def _wait_idle(self) -> None:
        self._idle = True
        self._wake.clear()
        try:
            self._wake.wait()
        finally:
            self._idle = False

    def _wait_no_reply(self, call: Call) -> None:
        """The head is a command that answers nothing on success.

        The agent runs commands in order, so once a call sent after it is answered, it
        has succeeded: drop it and go on.  Until then wait for it, a later call, or news.
        """
        later = [slot[0] for slot in islice(self._slots, 1, None) if isinstance(slot, tuple)]
        if any(c.ready() for c in later):
            self._slots.popleft()
            self.channel.abandon(call)
            return
        if self._eof and not later:
            # Nothing else will come: give the agent the rest of the linger time.
            call.wait()
            return
        self._idle = True
        self._wake.clear()
        try:
            gevent.wait([call, self._wake, *later], count=1)
        finally:
            self._idle = False

    @staticmethod
    def _render(call: Call, client_id: Any) -> bytes | None:
        if call.successful():
            return replies.with_id(call.value, client_id)
        exc = call.exception
        if call.command in NO_SUCCESS_RESPONSE and isinstance(exc, ConnectionLost):
            return None  # the guest went down: that is what the command asked for
        return replies.unavailable(str(exc), client_id)

    # -- the end --------------------------------------------------------------------
    def _finish(self, writer: gevent.Greenlet, reason: str) -> None:
        self.end_reason = reason
        self._eof = True
        self._wake.set()
        if self._write_error is not None:
            self.end_reason = self._write_error
            return
        if self._slots and self._peer_gone():
            self.end_reason = f"{reason} with {len(self._slots)} requests in flight"
            return
        linger_until = time.monotonic() + self.linger
        while not writer.dead:
            remaining = min(linger_until, self._deadline) - time.monotonic()
            if remaining <= 0:
                break
            self._hurry.clear()
            gevent.wait([writer, self._hurry], timeout=remaining, count=1)
        if writer.dead or self._writing:
            return
        writer.kill()
        if self._fail_desc is not None and self._slots:
            self._fail_pending(self._fail_desc)

    def _fail_pending(self, desc: str) -> None:
        """Answer what is left: ready replies as they are, unanswered calls with ``desc``."""
        chunks: list[bytes] = []
        for slot in self._slots:
            if isinstance(slot, bytes):
                chunks.append(slot)
                continue
            call, client_id = slot
            data = (self._render(call, client_id) if call.ready()
                    else replies.unavailable(desc, client_id))
            if data is not None:
                chunks.append(data)
        self._abandon_rest()
        if chunks:
            try:
                with gevent.Timeout(1.0):
                    self.sock.sendall(b"".join(chunks))
            except (OSError, gevent.Timeout):
                pass

    def _abandon_rest(self) -> None:
        abandon = self.channel.abandon
        for slot in self._slots:
            if isinstance(slot, tuple) and not slot[0].ready():
                abandon(slot[0])
        self._slots.clear()

    def _peer_gone(self) -> bool:
        """Whether the client closed both directions (a Unix socket can tell)."""
        if self.sock.family != socket.AF_UNIX:
            return False
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return any(ev & select.POLLHUP for _, ev in poller.poll(0))
        except (OSError, ValueError):
            return True

    def _shutdown_socket(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(how)

    def __repr__(self) -> str:
        return f"<Session {self.name} {len(self._slots)} in flight>"
