"""Matching replies to calls: by id, or in order for agents that echo no ids.

The router owns the table of calls in flight.  It gives each request a channel-unique
``id`` and encodes it; it hands each reply to the call that carries its id, drops (and
counts) replies nobody waits for, passes messages that answer no call (events) to
subscribers, and falls back to first-in-first-out matching the first time an agent
answers a request without its id.  It does no I/O: the channel feeds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionLost
from .call import Call, encode_json
from .stats import ChannelStats


class Router:
    """The table of calls in flight for one channel."""

    def __init__(self, stats: ChannelStats, log: logging.Logger) -> None:
        self.stats = stats
        self.log = log
        self.pending: dict[int, Call] = {}  # in send order (FIFO matching relies on it)
        self.next_id = 1
        self.echoes_ids = True
        # Until a reply has come back with its id, an agent that echoes none is still
        # possible: abandoned calls then keep their place, so that order matching
        # consumes their replies instead of handing them to the next call.
        self.ids_confirmed = False
        self.subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._heads: dict[str, bytes] = {}

    def new_connection(self, echoes_ids: bool = True) -> None:
        """A new connection (perhaps another agent): learn again whether it echoes ids.

        ``echoes_ids=False`` for protocols known to carry none (match in order at once).
        """
        self.echoes_ids = echoes_ids
        self.ids_confirmed = False

    # -- requests -------------------------------------------------------------------
    def new_call(self, command: str, on_done: Callable[[Call], None] | None) -> Call:
        """A call with the next id (not yet in flight)."""
        cid = self.next_id
        self.next_id = cid + 1
        return Call(cid, command, on_done)

    def encode_request(self, call: Call, request: dict[str, Any]) -> bytes:
        """``request`` with the call's id, as a line."""
        request["id"] = call.cid
        return encode_json(request).encode() + b"\n"

    def encode_command(self, call: Call, arguments: dict[str, Any] | None) -> bytes:
        """``{"execute": command, "arguments": ..., "id": ...}`` from a cached head."""
        head = self._heads.get(call.command)
        if head is None:
            head = b'{"execute":' + encode_json(call.command).encode()
            if len(self._heads) < 1024:
                self._heads[call.command] = head
        if arguments is None:
            return b'%s,"id":%d}\n' % (head, call.cid)
        return b'%s,"arguments":%s,"id":%d}\n' % (head, encode_json(arguments).encode(),
                                                  call.cid)

    def add(self, call: Call) -> None:
        """The call's request is about to be written: its reply is awaited."""
        self.pending[call.cid] = call
        self.stats.calls += 1

    def abandon(self, call: Call) -> None:
        """Nobody waits for ``call`` any more; its late reply will be dropped."""
        call.abandoned = True
        self.stats.abandoned += 1
        if self.echoes_ids and self.ids_confirmed:
            self.pending.pop(call.cid, None)
        # Otherwise the entry stays: in order matching its reply must still be consumed.

    # -- replies --------------------------------------------------------------------
    def route(self, value: dict[str, Any]) -> None:
        """Hand a reply (or an event) to whoever waits for it."""
        if "id" in value:
            try:
                call = self.pending.pop(value["id"], None)
            except TypeError:  # an unhashable id is nobody's
                call = None
            if call is None or call.abandoned:
                self.stats.late_replies += 1
                if self.log.isEnabledFor(logging.DEBUG):
                    self.log.debug("dropping a reply nobody waits for: %.200r", value)
                return
            self.ids_confirmed = True
            self.stats.replies += 1
            call.complete(value)
            return
        if "return" not in value and "error" not in value:
            self.publish(value)
            return
        if self.ids_confirmed:
            # This agent echoes ids: an id-less reply is no call's, and order matching
            # would hand it to the wrong caller.
            self.stats.unexpected += 1
            self.log.warning("dropping an id-less reply from an agent that echoes ids: "
                             "%.200r", value)
            return
        if not self.pending:
            self.stats.late_replies += 1
            self.log.debug("dropping an id-less reply nobody waits for: %.200r", value)
            return
        if self.echoes_ids:
            self.echoes_ids = False
            self.log.warning("the agent does not echo request ids; matching replies in order")
        cid = next(iter(self.pending))
        call = self.pending.pop(cid)
        if call.abandoned:
            self.stats.late_replies += 1
            return
        self.stats.replies += 1
        value["id"] = cid
        call.complete(value)

    def publish(self, message: dict[str, Any]) -> None:
        """Pass a message that answers no call to every subscriber."""
        self.stats.events += 1
        for callback in list(self.subscribers):
            try:
                callback(message)
            except Exception:
                self.log.exception("event subscriber failed")

    # -- failures -------------------------------------------------------------------
    def fail_all(self, exc: ConnectionLost) -> None:
        """Fail every call in flight with (a copy of) ``exc``."""
        pending = list(self.pending.values())
        self.pending.clear()
        for call in pending:
            if not call.ready():
                call.fail(type(exc)(str(exc)))

    def fail_lost(self, boundary: int) -> None:
        """Fail calls sent before id ``boundary`` that are still unanswered.

        Called when a sync marker sent after them has been answered: the agent answers
        in order, so their replies were lost (garbled on the line).
        """
        for cid in [cid for cid in self.pending if cid < boundary]:
            call = self.pending.pop(cid)
            if not call.abandoned and not call.ready():
                self.stats.lost_replies += 1
                call.fail(ConnectionLost(
                    f"the reply to {call.command!r} was lost (garbled on the line; "
                    "the channel re-synchronised)"))
