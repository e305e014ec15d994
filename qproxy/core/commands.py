"""Facts about agent commands that the protocol layers must know."""

from __future__ import annotations

from typing import Final

#: Commands that answer nothing on success (``'success-response': false`` in qemu-ga's
#: schema; ``guest-info`` lists it per command).  Errors still come back, and the agent
#: runs commands in order, so a reply to any later request proves they succeeded.
NO_SUCCESS_RESPONSE: Final = frozenset({
    "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid",
})

#: The commands that synchronise a stream rather than do anything.
SYNC_COMMANDS: Final = frozenset({"guest-sync", "guest-sync-delimited"})
