"""A streaming JSON decoder for agent byte streams, built on ijson's yajl2_c backend.

Feed it chunks of any size; it hands over each complete top-level JSON value as soon
as the chunk carrying its last byte is fed.  It is made for the guest-agent wire:

* **0xFF resets it.**  0xFF never occurs in UTF-8 JSON; the agent sends it before the
  ``guest-sync-delimited`` reply.  The partial value before it is dropped.
* **Garbage is skipped.**  Bytes that are not JSON (line noise, a login banner, kernel
  messages on a serial line) are logged, counted and skipped; decoding resumes at the
  next ``{`` or ``[`` that starts a well-formed value.
* **Size is bounded.**  A value larger than ``max_size`` is discarded up to the next
  newline or 0xFF, reported through ``on_error`` and never held in memory whole.
* **No quadratic re-scan.**  yajl re-lexes a partial token on every chunk, so a 64 MiB
  string fed in 4 KiB pieces would take minutes.  The decoder frames on newlines (every
  agent reply ends with one) and gives ijson whole lines; a partial line is fed early
  only when it may just have ended (its last byte is ``}`` or ``]``), so values without
  a trailing newline (the 2011 handshake's events) still arrive at once.

The fast path is one ``send()`` per read; the careful re-parse that locates garbage runs
only after ijson reports an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ijson

from ..errors import MessageTooLarge, ProtocolError
from .parser import BACKEND_NAME, new_parser
from .salvage import Garbage, salvage, value_end

__all__ = ["BACKEND_NAME", "DEFAULT_MAX_SIZE", "Decoder", "DecoderStats", "value_end"]

#: 64 MiB of payload plus room for the reply's envelope: a 48 MiB guest-file-read is a
#: 64 MiB base64 string inside ``{"return": {"count": …, "buf-b64": "…", "eof": …}}``.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024 + 64 * 1024

_JSONError = ijson.common.JSONError
_VALUE_START = re.compile(rb"[{\[]")
_OBJECT_START = re.compile(rb"{")
_WS = b" \t\r\n"


@dataclass
class DecoderStats:
    """Counters a decoder keeps; read them for diagnostics."""

    values: int = 0
    garbage_bytes: int = 0
    parse_errors: int = 0
    resets: int = 0
    oversize: int = 0




def _ends_like_value(data: bytes | bytearray) -> bool:
    tail = bytes(data[-16:]).rstrip(_WS)
    return tail.endswith((b"}", b"]"))


class Decoder:
    """Decode a stream of JSON values arriving in arbitrary chunks.

    ``on_value(value)`` is called for every complete top-level value, in order.
    ``on_reset()`` is called for every 0xFF byte.  With ``objects_only`` (agent
    streams), top-level values that are not objects -- a console's ``[  12.34]`` kernel
    timestamp is valid JSON -- count as garbage and are not handed over.
    ``on_error(exc)`` receives a :class:`~qproxy.errors.ProtocolError` for garbage and
    over-size messages; the decoder goes on either way.  Callbacks should not raise:
    an exception is logged and swallowed so that one bad consumer cannot kill the stream.
    """

    def __init__(self, on_value: Callable[[Any], None], *,
                 max_size: int = DEFAULT_MAX_SIZE,
                 on_reset: Callable[[], None] | None = None,
                 on_error: Callable[[ProtocolError], None] | None = None,
                 objects_only: bool = False,
                 logger: logging.Logger | None = None) -> None:
        if max_size < 64:
            raise ValueError("max_size must be at least 64 bytes")
        self.on_value = on_value
        self.on_reset = on_reset
        self.on_error = on_error
        self.max_size = max_size
        self.objects_only = objects_only
        self._start = _OBJECT_START if objects_only else _VALUE_START
        self.log = logger or logging.getLogger("qproxy.decoder")
        self.stats = DecoderStats()
        self._out: Any = ijson.sendable_list()
        self._coro: Any = new_parser(self._out)
        # Bytes fed to the parser since it was last known to sit between values, and how
        # many values those bytes already yielded (for the careful re-parse after an error).
        self._since = bytearray()
        self._since_values = 0
        # Bytes of the current line not fed to the parser yet.
        self._held = bytearray()
        self._discarding = False

    # -- public ---------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Feed a chunk of bytes; complete values are handed to ``on_value`` now."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if (not self._held and not self._discarding and data[-1:] == b"\n"
                and len(data) + len(self._since) <= self.max_size and b"\xff" not in data):
            self._send(data)  # the common case: whole lines, nothing to frame
            return
        start = 0
        while True:
            ff = data.find(b"\xff", start)
            if ff < 0:
                if start < len(data):
                    self._feed_piece(data[start:] if start else data)
                return
            if ff > start:
                self._feed_piece(data[start:ff])
            self._resync()
            start = ff + 1

    def reset(self) -> None:
        """Drop any partial value and start afresh (as a 0xFF would, without on_reset)."""
        self._drop_partial(count=False)
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete value held right now."""
        return len(self._since) + len(self._held)

    # -- framing --------------------------------------------------------------------
    def _resync(self) -> None:
        self._drop_partial(count=True)
        self._discarding = False
        self.stats.resets += 1
        if self.on_reset is not None:
            try:
                self.on_reset()
            except Exception:
                self.log.exception("on_reset callback failed")

    def _drop_partial(self, count: bool) -> None:
        dropped = len(bytes(self._since).strip(_WS)) + len(bytes(self._held).strip(_WS))
        if count and dropped:
            self.stats.garbage_bytes += dropped
            self.log.debug("dropped %d bytes of an unfinished value", dropped)
        self._since.clear()
        self._since_values = 0
        self._held.clear()
        self._out.clear()
        self._coro = new_parser(self._out)

    def _feed_piece(self, piece: bytes) -> None:
        if self._discarding:
            nl = piece.find(b"\n")
            if nl < 0:
                self.stats.garbage_bytes += len(piece)
                return
            self.stats.garbage_bytes += nl + 1
            self._discarding = False
            piece = piece[nl + 1:]
            if not piece:
                return
        nl = piece.rfind(b"\n")
        if nl >= 0:
            first_nl = piece.find(b"\n") if self._since or self._held else -1
            if first_nl >= 0 and len(self._since) + len(self._held) + first_nl + 1 > self.max_size:
                self._oversize(len(self._since) + len(self._held) + first_nl + 1)
                self._discarding = True
                self._feed_piece(piece)
                return
            head: bytes | bytearray
            if self._held:
                self._held += piece[:nl + 1]
                head, self._held = self._held, bytearray()  # ijson takes it without a copy
            else:
                head = piece if nl == len(piece) - 1 else piece[:nl + 1]
            if len(head) + len(self._since) > self.max_size:
                self._send_checked(head)
            else:
                self._send(head)
            piece = piece[nl + 1:]
            if not piece:
                return
        self._held += piece
        pending = len(self._since) + len(self._held)
        if pending > self.max_size:
            self._oversize(pending)
            self._discarding = True
            return
        if _ends_like_value(self._held):
            held = bytes(self._held)
            self._held.clear()
            self._send(held)

    def _send_checked(self, head: bytes | bytearray) -> None:
        """Send complete lines, dropping any line longer than the limit."""
        run: list[bytes | bytearray] = []
        run_size = len(self._since)
        for line in head.splitlines(keepends=True):
            if run_size + len(line) > self.max_size:
                if run:
                    self._send(b"".join(run))
                    run.clear()
                    run_size = len(self._since)
                if run_size + len(line) > self.max_size:
                    self._oversize(run_size + len(line))
                    run_size = 0
                    continue
            run.append(line)
            run_size += len(line)
        if run:
            self._send(b"".join(run))

    def _oversize(self, size: int) -> None:
        self.stats.oversize += 1
        self._drop_partial(count=False)
        self.stats.garbage_bytes += size
        self.log.warning("discarding a message of at least %d bytes (limit %d)",
                         size, self.max_size)
        self._report(MessageTooLarge(size, self.max_size))

    def _report(self, exc: ProtocolError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                self.log.exception("on_error callback failed")

    # -- parsing --------------------------------------------------------------------
    def _send(self, data: bytes | bytearray) -> None:
        out = self._out
        try:
            self._coro.send(data)
        except _JSONError:
            self._recover(data)
            return
        if out:
            values = out[:]
            del out[:]
            if data.endswith(b"\n") or _ends_like_value(data):
                self._since.clear()
                self._since_values = 0
            else:
                self._since += data
                self._since_values += len(values)
            self._emit(values)
        else:
            self._since += data
            if len(self._since) > self.max_size:
                self._oversize(len(self._since))
                self._discarding = True

    def _emit(self, values: list[Any]) -> None:
        on_value = self.on_value
        objects_only = self.objects_only
        for value in values:
            if objects_only and type(value) is not dict:
                self.stats.garbage_bytes += 1
                self.log.debug("skipped a top-level value that is not an object: %.80r", value)
                continue
            self.stats.values += 1
            try:
                on_value(value)
            except Exception:
                self.log.exception("on_value callback failed")

    def _recover(self, data: bytes | bytearray) -> None:
        """ijson rejected the input: re-parse it carefully, value by value.

        Values and garbage are handed on in stream order, so a consumer that answers
        garbage (the server does) answers it after the values that came before it.
        """
        self.stats.parse_errors += 1
        buf = bytes(self._since) + data
        skip = self._since_values
        self._since.clear()
        self._since_values = 0
        self._out.clear()
        self._coro = new_parser(self._out)
        items, tail = salvage(buf, self._start)
        if tail is not None:
            # An unfinished value, well-formed so far: the live parser goes on with it.
            self._coro.send(buf[tail:])
            self._since += buf[tail:]
        for item in items:
            if isinstance(item, Garbage):
                self.stats.garbage_bytes += item.size
                self.log.warning("skipped %d bytes that are not JSON (near %r)",
                                 item.size, buf[item.pos:item.pos + 60])
                self._report(ProtocolError(f"skipped {item.size} bytes of input that are not JSON"))
            elif skip:
                skip -= 1
            else:
                self._emit([item])
