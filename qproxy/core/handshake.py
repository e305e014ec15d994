"""Handshakes that put a fresh byte stream into a known state.

A stream to an agent can hold anything when we arrive: half a request from a client
that died, a late reply, a login banner.  A handshake sends a marker the agent will
answer and throws away everything until that answer comes back.

* ``sync-delimited`` (default): ``0xFF`` + ``guest-sync-delimited {"id": N}``; the agent
  resets its lexer on 0xFF and answers ``0xFF {"return": N}``.  qemu-ga >= 1.1.
* ``sync``: ``guest-sync {"id": N}`` without the 0xFF framing (what libvirt sends).
* ``none``: trust the stream as it is (agents that implement neither).
* ``xport-2011``: wait for the agent's ``guest_init`` and answer ``host_ack`` (the 2011
  RFC's transport events, :mod:`.xport`); replies are matched in order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidURL

HANDSHAKES = ("sync-delimited", "sync", "none", "xport-2011")


@dataclass
class SyncMarker:
    """One sync attempt: the bytes to send and the value that answers it."""

    sync_id: int
    payload: bytes
    delimited: bool

    def matches(self, value: Any, saw_ff: bool) -> bool:
        """Whether ``value`` is the answer to this attempt."""
        if type(value) is not dict or value.get("return") != self.sync_id:
            return False
        return saw_ff or not self.delimited


def check_handshake(name: str) -> str:
    """Validate a handshake name, with an error listing the valid ones."""
    if name not in HANDSHAKES:
        raise InvalidURL(f"unknown handshake {name!r} (choose from {', '.join(HANDSHAKES)})")
    return name


def new_marker(handshake: str) -> SyncMarker | None:
    """A fresh sync attempt for ``handshake`` (``None`` when nothing is to be sent)."""
    if handshake in ("none", "xport-2011"):
        return None
    sync_id = random.randint(1, 2**31 - 1)
    delimited = handshake == "sync-delimited"
    command = "guest-sync-delimited" if delimited else "guest-sync"
    body = json.dumps({"execute": command, "arguments": {"id": sync_id}}).encode() + b"\n"
    return SyncMarker(sync_id, (b"\xff" + body) if delimited else body, delimited)


def is_stray_parse_error(value: dict[str, Any]) -> bool:
    """The id-less parse error an agent sends after reading 0xFF or garbage."""
    error = value.get("error")
    return (type(error) is dict and "id" not in value
            and str(error.get("desc", "")).startswith("JSON parse error"))
