"""One client session: a client speaks the agent protocol as if it talked to qemu-ga.

A session owns one client socket.  Its per-request path runs in event-loop callbacks,
with no greenlet switch per request:

* when the socket is **readable**, the bytes are decoded with the same
  :class:`~qproxy.core.decoder.Decoder` the channel uses; parse errors and 0xFF are
  answered locally, requests pass the :mod:`.gate` (syncs, the socket's policy, file
  handles), the rest is forwarded with :meth:`Channel.submit` (which never blocks),
  remembering the client's own id;
* every request takes one *slot* in an ordered queue: the bytes of a local answer, or
  ``(call, client_id)``.  Whenever the first slot is ready (after a read, or when the
  call at the head completes), every ready slot from the head on is rendered and
  written in one ``write()``.  What a full socket does not take waits for a write
  watcher, and nothing more is rendered meanwhile.

Backpressure: with ``max_in_flight`` slots waiting, the session stops reading from the
client until half of them are written.  A client that does not read its replies
therefore stops being read.

When the client goes away its unanswered calls are abandoned, so their late replies are
dropped by the channel.  A client that only half-closes (``socat`` after its input
ended) still gets the replies it waits for, for up to ``linger`` seconds.  The greenlet
that called :meth:`Session.run` only waits for the end and tidies up.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections import deque
from itertools import islice
from typing import Any, Final

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from ..core.channel import Call, Channel
from ..core.commands import NO_SUCCESS_RESPONSE
from ..core.decoder import DEFAULT_MAX_SIZE, Decoder
from ..errors import ConnectionLost, MessageTooLarge, ProtocolError
from . import replies
from .gate import WATCHED, Gate
from .policy import CommandPolicy
from .replies import NO_ID

log = logging.getLogger("qproxy.server.session")
#: Where the decoder reports what clients send that is not JSON.
_input_log = logging.getLogger("qproxy.server.input")

#: Largest read from a client at once.
RECV_SIZE: Final = 256 * 1024
#: Requests a session may have in flight before the server stops reading from it.
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: Seconds a half-closed client is still served its pending replies.
DEFAULT_LINGER: Final = 30.0

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
                 linger: float = DEFAULT_LINGER,
                 policy: CommandPolicy | None = None) -> None:
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
        self._fd = sock.fileno()
        loop = get_hub().loop
        self._rwatch: Any = loop.io(self._fd, 1)
        self._wwatch: Any = loop.io(self._fd, 2)
        self._slots: deque[Slot] = deque()
        self._out: bytes | memoryview = b""  # what a full socket has not taken yet
        self._low_water = max(1, max_in_flight // 2)
        self._loop = loop
        self._flush_scheduled = False
        self._reading = False
        self._throttled = False
        self._finishing = False
        self._stop_reading: str | None = None
        self._write_error: str | None = None
        self._deadline = float("inf")
        self._fail_desc: str | None = None
        self._ended = Event()    # reading is over
        self._drained = Event()  # nothing left to write (while finishing)
        self._hurry = Event()    # shutdown() moved the deadline
        self._gate = Gate(channel, name, policy)
        self._decoder = Decoder(self._on_value, max_size=max_message_size,
                                on_reset=self._on_reset, on_error=self._on_error,
                                logger=_input_log)

    # -- public --
    def run(self) -> None:
        """Serve the client until it leaves or the session is shut down."""
        started = time.monotonic()
        log.info("%s: opened", self.name)
        try:
            if self._stop_reading is None:
                self._reading = True
                self._rwatch.start(self._on_readable)
                self._ended.wait()
            self._finish()
        finally:
            self._stop_watchers()
            self._abandon_rest()
            if self._write_error is None:
                self._write_error = "the session ended"  # late callbacks write nothing
            self.done.set()
        log.info("%s: closed after %d requests in %.1f s (%s)", self.name, self.requests,
                 time.monotonic() - started, self.end_reason)

    def shutdown(self, deadline: float, desc: str = _SHUTDOWN_DESC) -> None:
        """Stop reading; pending calls may finish until ``deadline`` (monotonic), then fail."""
        self._fail_desc = desc
        self._deadline = min(self._deadline, deadline)
        self._end_reading("the server is shutting down")
        self._hurry.set()

    @property
    def in_flight(self) -> int:
        """Requests received whose replies are not written yet."""
        return len(self._slots)

    # -- reading (event-loop callbacks) --
    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end_reading(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._end_reading("the client closed the connection")
            return
        try:
            self._decoder.feed(data)
            self._flush()
        except Exception:  # never let a bug escape into the event loop
            log.exception("%s: failed to handle input", self.name)
            self._end_reading("internal error (see the log)")
            return
        if self._stop_reading is not None:
            self._end_reading(self._stop_reading)
        elif len(self._slots) >= self.max_in_flight:
            self._pause_reading()

    def _end_reading(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self._stop_reading is None:
            self._stop_reading = reason
        if self._reading:
            self._reading = False
            self._rwatch.stop()
        self._ended.set()

    def _pause_reading(self) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %d requests in flight; pausing reads", self.name, len(self._slots))
        self._throttled = True
        self._reading = False
        self._rwatch.stop()

    def _resume_reading(self) -> None:
        self._throttled = False
        if self._stop_reading is None and not self._reading:
            self._reading = True
            self._rwatch.start(self._on_readable)

    def _on_value(self, value: Any) -> None:
        if self._stop_reading is not None:
            return
        self.requests += 1
        if type(value) is dict:
            command = value.get("execute")
            if type(command) is str:
                client_id = value.pop("id", NO_ID)
                local = self._gate.local_answer(command, value, client_id)
                if local is not None:
                    self._slots.append(local)
                    return
                call = self.channel.submit(value, self._on_done)
                self._gate.sent(command, value, call)
                self._slots.append((call, client_id))
                return
        self._slots.append(replies.invalid_request(value))

    def _on_reset(self) -> None:
        if self._stop_reading is None:
            self._slots.append(replies.STRAY_FF)

    def _on_error(self, exc: ProtocolError) -> None:
        if self._stop_reading is not None:
            return
        if isinstance(exc, MessageTooLarge):
            log.warning("%s: %s; closing the session", self.name, exc)
            self._slots.append(replies.error("GenericError",
                                             f"qproxy: {exc}; closing the connection"))
            self._stop_reading = "the client sent an over-size message"
            return
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %s", self.name, exc)
        self._slots.append(replies.parse_error(str(exc)))

    # -- writing (event-loop callbacks) --
    def _on_done(self, call: Call) -> None:
        """A call of ours completed: flush once this turn of the loop is over.

        One flush per session per turn, however many of its replies a read from the
        agent carried, so they leave in one write.
        """
        if call.command in WATCHED:
            self._gate.answered(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._on_call_done, call)

    def _on_call_done(self, call: Call) -> None:
        self._flush_scheduled = False
        try:
            self._flush()
        except Exception:
            log.exception("%s: failed to write a reply", self.name)
            self._broken("internal error (see the log)")

    def _flush(self) -> None:
        """Write every ready reply from the head of the queue, in one write."""
        if self._out or self._write_error is not None:
            return  # the write watcher calls again once the socket takes more
        slots = self._slots
        chunks: list[bytes] = []
        while slots:
            slot = slots[0]
            if isinstance(slot, bytes):
                chunks.append(slot)
            else:
                call, client_id = slot
                if not call.ready():
                    if call.command in NO_SUCCESS_RESPONSE and self._succeeded(call):
                        slots.popleft()
                        continue
                    break
                data = self._render(call, client_id)
                if data is not None:
                    chunks.append(data)
            slots.popleft()
        if chunks:
            self._write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._out:
            return
        if self._throttled and len(slots) <= self._low_water:
            self._resume_reading()
        if self._finishing and not slots:
            self._drained.set()

    def _succeeded(self, call: Call) -> bool:
        """Whether a command that answers nothing on success has succeeded.

        The agent runs commands in order: once a call sent after it is answered, it
        has.  Every call reports its completion (``on_done``), so a later reply brings
        us back here.
        """
        later = (s[0] for s in islice(self._slots, 1, None) if isinstance(s, tuple))
        if any(c.ready() for c in later):
            self.channel.abandon(call, timed_out=False)
            return True
        return False

    def _write(self, data: bytes | memoryview) -> None:
        try:
            sent = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._broken(f"write failed: {exc.strerror or exc}")
            return
        if sent < len(data):
            self._out = memoryview(data)[sent:]
            self._wwatch.start(self._on_writable)

    def _on_writable(self) -> None:
        out, self._out = self._out, b""
        self._wwatch.stop()
        try:
            self._write(out)
            if not self._out:
                self._flush()
        except Exception:
            log.exception("%s: failed to write a reply", self.name)
            self._broken("internal error (see the log)")

    def _broken(self, reason: str) -> None:
        self._write_error = reason
        self._out = b""
        self._wwatch.stop()
        self._abandon_rest()
        self._end_reading(reason)
        self._drained.set()

    @staticmethod
    def _render(call: Call, client_id: Any) -> bytes | None:
        if call.successful():
            return replies.with_id(call.value, client_id)
        exc = call.exception
        if call.command in NO_SUCCESS_RESPONSE and isinstance(exc, ConnectionLost):
            return None  # the guest went down: that is what the command asked for
        return replies.unavailable(str(exc), client_id)

    # -- the end (in the session's greenlet) --
    def _finish(self) -> None:
        if self._write_error is not None:
            self.end_reason = self._write_error
            return
        if (self._slots or self._out) and self._peer_gone():
            self.end_reason = f"{self.end_reason} with {len(self._slots)} requests in flight"
            return
        self._finishing = True
        linger_until = time.monotonic() + self.linger
        while self._slots or self._out:
            remaining = min(linger_until, self._deadline) - time.monotonic()
            if remaining <= 0:
                break
            self._drained.clear()
            self._hurry.clear()
            gevent.wait([self._drained, self._hurry], timeout=remaining, count=1)
        if self._slots and not self._out and self._fail_desc is not None:
            self._fail_pending(self._fail_desc)

    def _fail_pending(self, desc: str) -> None:
        """Answer what is left: ready replies as they are, unanswered calls with ``desc``."""
        self._stop_watchers()
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
        opening: list[Call] = []
        for slot in self._slots:
            if isinstance(slot, tuple) and not slot[0].ready():
                if slot[0].command == "guest-file-open":
                    opening.append(slot[0])  # its handle must be closed when it comes
                else:
                    abandon(slot[0], timed_out=False)
        self._slots.clear()
        self._gate.release(opening)

    def _stop_watchers(self) -> None:
        self._reading = False
        self._rwatch.stop()
        self._wwatch.stop()

    def _peer_gone(self) -> bool:
        """Whether the client closed both directions (a Unix socket can tell)."""
        if self.sock.family != socket.AF_UNIX:
            return False
        try:
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            return any(ev & select.POLLHUP for _, ev in poller.poll(0))
        except (OSError, ValueError):
            return True

    def __repr__(self) -> str:
        return f"<Session {self.name} {len(self._slots)} in flight>"
