"""The 2011 transport handshake (QEMU's qmp-proxy RFC): ``guest_init`` / ``host_ack``.

The agent starts a session by sending ``0xFF {"_xport_event": "guest_init",
"_xport_arg_sid": SID}`` (no newline) and ignores all input until the host answers
``0xFF {"_xport_event": "host_ack", "_xport_arg_sid": SID}``.  A second ``guest_init``
means the agent restarted: every call queued or sent before it is cancelled (its caller
gets :class:`~qproxy.errors.AgentReset`, not silence) and the host acks again.  Replies
carry no ids; they are matched to requests in order.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: The handshake name that selects this protocol.
XPORT_2011: Final = "xport-2011"


def event_of(message: dict[str, Any]) -> str | None:
    """The transport event a message carries (``guest_init``...), or ``None``."""
    event = message.get("_xport_event")
    return event if isinstance(event, str) else None


def session_of(message: dict[str, Any]) -> Any:
    """The session id an event names."""
    return message.get("_xport_arg_sid")


def event(name: str, sid: Any) -> bytes:
    """A transport event on the wire: 0xFF, then the JSON object (no newline)."""
    return b"\xff" + json.dumps({"_xport_event": name, "_xport_arg_sid": sid}).encode()


def host_ack(sid: Any) -> bytes:
    """The host's answer to ``guest_init``."""
    return event("host_ack", sid)
