"""Putting a byte stream into a known state: the handshake and in-band re-syncs.

On every new connection the channel sends a sync marker (see :mod:`.handshake`) and
drops everything until the agent answers it.  While connected, garbage on the line, an
agent that could not parse what it got, or a call that timed out start an *in-band*
re-sync: a marker goes through the write queue like any request, and since the agent
answers in order, every call sent before it that is still unanswered when its answer
arrives has lost its reply and fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

from ..errors import ConnectionLost
from ..transports import Transport
from .handshake import SyncMarker, new_marker
from .router import Router
from .stats import ChannelStats
from .xport import XPORT_2011


class Synchronizer:
    """The sync markers of one channel."""

    def __init__(self, handshake: str, *, router: Router, stats: ChannelStats,
                 log: logging.Logger, enqueue: Callable[[bytes], None],
                 is_ready: Callable[[], bool], first_wait: float, max_wait: float) -> None:
        self.handshake = handshake
        self.router = router
        self.stats = stats
        self.log = log
        self._enqueue = enqueue
        self._is_ready = is_ready
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.marker: SyncMarker | None = None
        # Every marker sent on this connection and not answered yet: an answer to an
        # older one (it came after we gave up waiting and sent another) must be
        # recognised as such, never taken for the reply to a call.
        self._outstanding: set[int] = set()
        self._saw_ff = False
        self._answered = Event()
        self._resyncer: gevent.Greenlet | None = None
        self._again = False

    def _wait_for(self, attempt: int) -> float:
        return float(min(self.max_wait, self.first_wait * (2 ** min(attempt, 10))))

    def _arm(self, marker: SyncMarker) -> None:
        self.marker = marker
        self._outstanding.add(marker.sync_id)
        self._saw_ff = False
        self._answered.clear()
        self.stats.syncs += 1

    # -- fed by the channel -----------------------------------------------------------
    def on_reset(self) -> None:
        """The agent sent 0xFF (it precedes a guest-sync-delimited answer)."""
        self._saw_ff = True

    def answers(self, value: dict[str, Any]) -> bool:
        """Whether ``value`` answers a marker of ours (then it is consumed).

        The marker in flight completes the sync; an older marker's late answer is
        dropped.
        """
        marker = self.marker
        if marker is not None and marker.matches(value, self._saw_ff):
            self._outstanding.discard(marker.sync_id)
            self._answered.set()
            return True
        returned = value.get("return")
        if type(returned) is int and returned in self._outstanding and "id" not in value:
            self._outstanding.discard(returned)
            self.stats.discarded += 1
            self.log.debug("dropping the late answer to an earlier sync marker")
            return True
        return False

    # -- the handshake ------------------------------------------------------------------
    def handshake_on(self, transport: Transport) -> bool:
        """Sync a new connection, retrying with growing waits until the agent answers.

        Returns False if the transport broke first.
        """
        if self.handshake == XPORT_2011:
            # The agent speaks first: wait for its guest_init (see agent_started()).
            self._answered.clear()
            self._answered.wait()
            return True
        attempt = 0
        while True:
            marker = new_marker(self.handshake)
            if marker is None:
                return True
            self._arm(marker)
            try:
                transport.write(marker.payload)
            except ConnectionLost:
                return False
            self.stats.bytes_out += len(marker.payload)
            wait = self._wait_for(attempt)
            if self._answered.wait(wait):
                self.marker = None
                return True
            attempt += 1
            self.log.info("no answer to %s after %.1f s; retrying", self.handshake, wait)

    def agent_started(self) -> None:
        """The agent's ``guest_init`` arrived (2011 handshake): the handshake is done."""
        self._answered.set()

    # -- in band --------------------------------------------------------------------
    def resync_soon(self, why: str) -> None:
        """Re-synchronise in band: a reply may have been lost or misread.

        The 2011 protocol has no sync command: there, calls that timed out keep their
        place in the order instead, and their late replies are consumed in turn.
        """
        if not self._is_ready() or self.handshake == XPORT_2011:
            return
        if self._resyncer is not None:
            # The garbage may have eaten replies sent after the marker in flight.
            self._again = True
            return
        self.log.info("re-synchronising with the agent: %s", why)
        self._resyncer = gevent.spawn(self._inband)

    def _inband(self) -> None:
        handshake = self.handshake if self.handshake != "none" else "sync-delimited"
        attempt = 0
        try:
            while self._is_ready():
                marker = new_marker(handshake)
                assert marker is not None
                boundary = self.router.next_id
                self._arm(marker)
                self._enqueue(marker.payload)
                if self._answered.wait(self._wait_for(attempt)):
                    self.router.fail_lost(boundary)
                    if not self._again:
                        return
                    self._again = False
                    attempt = 0
                    continue
                attempt += 1
        finally:
            self.marker = None
            self._resyncer = None

    def stop(self) -> None:
        """The connection is over: forget the markers, stop re-syncing."""
        if self._resyncer is not None:
            self._resyncer.kill(block=False)
        self.marker = None
        self._outstanding.clear()
