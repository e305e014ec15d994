"""What a session's requests may do, before and after they reach the agent.

* ``guest-sync`` and ``guest-sync-delimited`` are answered by the server, for the one
  client that asked (:mod:`.replies`);
* the socket's command policy refuses what it does not allow (:mod:`.policy`), and marks
  those commands disabled in ``guest-info`` replies;
* guest-file handles belong to the session that opened them (:mod:`.handles`).
"""

from __future__ import annotations

from typing import Any, Final

from ..core.channel import Call, Channel
from ..core.commands import SYNC_COMMANDS
from . import replies
from .handles import TRACKED, FileHandles
from .policy import CommandPolicy

#: Commands whose replies the gate must see (see :meth:`Gate.answered`).
WATCHED: Final = TRACKED | {"guest-info"}


class Gate:
    """The checks one session's requests pass through."""

    def __init__(self, channel: Channel, session: str,
                 policy: CommandPolicy | None = None) -> None:
        self.policy = policy
        self.handles = FileHandles(channel, session)

    def local_answer(self, command: str, request: dict[str, Any],
                     client_id: Any) -> bytes | None:
        """The reply the server gives itself, or ``None`` to forward the request."""
        if command in SYNC_COMMANDS:
            return replies.sync_reply(command, request, client_id)
        if self.policy is not None and not self.policy.permits(command):
            return replies.error("CommandNotFound", self.policy.refusal(command), client_id)
        if command in TRACKED:
            refused = self.handles.refuse(command, request)
            if refused is not None:
                return replies.error("GenericError", refused, client_id)
        return None

    def sent(self, command: str, request: dict[str, Any], call: Call) -> None:
        """``request`` went to the agent as ``call``."""
        if command in TRACKED:
            self.handles.sent(command, request, call)

    def answered(self, call: Call) -> None:
        """A call whose command is in :data:`WATCHED` completed."""
        if call.command in TRACKED:
            self.handles.answered(call)
        elif self.policy is not None and call.successful():
            self.policy.mark_disabled(call.value.get("return"))

    def release(self, unanswered_opens: list[Call]) -> None:
        """The session is over: close the guest-file handles it holds or is opening."""
        self.handles.release(unanswered_opens)
