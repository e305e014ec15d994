"""The write side of a channel: straight from the caller when it can, batched otherwise.

A caller whose request finds nothing queued and nobody writing writes it itself, without
waiting (no greenlet switch on the common path).  Anything that does not fit at once, or
that arrives while another write is under way, joins a queue that the writer greenlet
sends in one write per turn: many small requests from many greenlets become few
syscalls.  Writes start only once the connection is ready (after the handshake).
"""

from __future__ import annotations

import logging
from collections import deque

from gevent.event import Event

from ..errors import ConnectionLost
from ..transports import Transport
from .stats import ChannelStats


class Writer:
    """Queue and write requests to the current transport, in order."""

    def __init__(self, stats: ChannelStats, log: logging.Logger) -> None:
        self.stats = stats
        self.log = log
        self.queue: deque[bytes] = deque()
        self.busy = False
        self._transport: Transport | None = None  # set while the connection is ready
        self._wake = Event()

    def open(self, transport: Transport) -> None:
        """The connection is ready: write what waited, and write from now on."""
        self._transport = transport
        self._wake.set()

    def close(self) -> None:
        """The connection is over: stop writing (the queue stays until :meth:`clear`)."""
        self._transport = None

    def clear(self) -> None:
        """Drop everything queued (its calls have been failed)."""
        self.queue.clear()

    def send(self, data: bytes) -> None:
        """Write ``data`` after everything sent before it; never blocks."""
        transport = self._transport
        if transport is not None and not self.queue and not self.busy:
            try:
                sent = transport.write_nowait(data)
            except ConnectionLost:
                sent = 0  # the reader sees the break and fails the call
            self.stats.bytes_out += sent
            if sent == len(data):
                return
            data = data[sent:]
        self.queue.append(data)
        self._wake.set()

    def send_first(self, data: bytes) -> None:
        """Put ``data`` ahead of everything queued (a handshake answer)."""
        self.queue.appendleft(data)
        self._wake.set()

    def run(self, transport: Transport) -> None:
        """The writer greenlet for one connection."""
        queue = self.queue
        while True:
            self._wake.wait()
            self._wake.clear()
            while queue and self._transport is transport:
                batch = queue.popleft() if len(queue) == 1 else b"".join(queue)
                queue.clear()
                self.busy = True
                try:
                    transport.write(batch)
                except ConnectionLost as exc:
                    # The reader sees the break too and fails every pending call.
                    self.log.debug("write failed: %s", exc)
                    return
                finally:
                    self.busy = False
                self.stats.bytes_out += len(batch)
