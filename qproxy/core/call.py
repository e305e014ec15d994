"""A request in flight, and how requests are put on the wire."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gevent.event import AsyncResult

#: Requests are encoded compactly; non-ASCII is escaped, as every agent can parse that.
encode_json = json.JSONEncoder(separators=(",", ":")).encode


class Call(AsyncResult):  # type: ignore[misc]
    """A request in flight: an AsyncResult that receives the agent's whole reply dict.

    ``cid`` is the channel-unique id the request carries on the wire; ``on_done(call)``,
    if given, runs as soon as the call completes or fails.
    """

    __slots__ = ("abandoned", "cid", "command", "on_done")

    def __init__(self, cid: int, command: str,
                 on_done: Callable[[Call], None] | None = None) -> None:
        super().__init__()
        self.cid = cid
        self.command = command
        self.abandoned = False
        self.on_done = on_done

    def complete(self, reply: dict[str, Any]) -> None:
        """Deliver the agent's reply."""
        self.set(reply)
        if self.on_done is not None:
            self.on_done(self)

    def fail(self, exc: BaseException) -> None:
        """Fail the call with ``exc``."""
        self.set_exception(exc)
        if self.on_done is not None:
            self.on_done(self)
