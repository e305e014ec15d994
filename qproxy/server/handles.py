"""guest-file handles belong to the session that opened them.

qemu-ga's file handles are global to the agent, not tied to a connection.  Through a
shared proxy one client could read or write another's open file by guessing its number,
and a client that vanishes would leave its files open in the guest for good.  So each
session tracks the handles its own ``guest-file-open`` calls returned: a request naming
any other handle is refused with the agent's own wording, and whatever the session
still holds when it ends is closed for it.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ..core.channel import Call, Channel

#: Commands that take a ``handle`` argument.
USES_HANDLE: Final = frozenset({"guest-file-read", "guest-file-write", "guest-file-seek",
                                "guest-file-flush", "guest-file-close"})
#: Commands whose replies change what a session holds.
TRACKED: Final = USES_HANDLE | {"guest-file-open"}

log = logging.getLogger("qproxy.server.handles")


def _handle_of(request: dict[str, Any]) -> int | None:
    arguments = request.get("arguments")
    handle = arguments.get("handle") if type(arguments) is dict else None
    return handle if type(handle) is int else None


class FileHandles:
    """The guest-file handles one session holds."""

    def __init__(self, channel: Channel, session: str) -> None:
        self.channel = channel
        self.session = session
        self.owned: set[int] = set()
        self._opening: set[int] = set()       # ids of guest-file-open calls in flight
        self._closing: dict[int, int] = {}    # id of a guest-file-close call -> handle

    def refuse(self, command: str, request: dict[str, Any]) -> str | None:
        """The agent's error text if ``request`` names a handle this session does not hold.

        A missing or malformed handle is left to the agent to word.
        """
        if command not in USES_HANDLE:
            return None
        handle = _handle_of(request)
        if handle is None or handle in self.owned:
            return None
        return f"handle '{handle}' has not been found"

    def sent(self, command: str, request: dict[str, Any], call: Call) -> None:
        """A tracked request went to the agent as ``call``."""
        if command == "guest-file-open":
            self._opening.add(call.cid)
        elif command == "guest-file-close":
            handle = _handle_of(request)
            if handle is not None:
                self._closing[call.cid] = handle

    def answered(self, call: Call) -> None:
        """A tracked call completed: learn what it opened or closed."""
        if call.cid in self._opening:
            self._opening.discard(call.cid)
            handle = call.value.get("return") if call.successful() else None
            if type(handle) is int:
                self.owned.add(handle)
        elif call.cid in self._closing:
            handle = self._closing.pop(call.cid)
            if call.successful() and "return" in call.value:
                self.owned.discard(handle)

    def release(self, unanswered_opens: list[Call]) -> None:
        """The session is over: close what it holds, and what it is still opening."""
        for handle in sorted(self.owned):
            self._close(handle)
        self.owned.clear()
        for call in unanswered_opens:
            call.on_done = self._close_when_open

    def _close_when_open(self, call: Call) -> None:
        handle = call.value.get("return") if call.successful() else None
        if type(handle) is int:
            self._close(handle)

    def _close(self, handle: int) -> None:
        log.info("%s: closing guest-file handle %d it left open", self.session, handle)
        self.channel.submit({"execute": "guest-file-close", "arguments": {"handle": handle}},
                            self._closed)

    def _closed(self, call: Call) -> None:
        if not call.successful() or "return" not in call.value:
            reason = call.exception if not call.successful() else call.value.get("error")
            log.warning("%s: could not close a guest-file handle it left open: %s",
                        self.session, reason)
