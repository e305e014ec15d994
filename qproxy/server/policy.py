"""Which commands the clients of a listener may run.

A policy is a list of shell-style patterns to allow (all commands when none is given)
and a list to deny (denial wins).  A refused command gets the answer qemu-ga gives for a
command blocked with ``--block-rpcs`` (``CommandNotFound``, "has been disabled"), so
clients handle it as they already do; ``guest-info`` shows such commands with
``"enabled": false``.  ``guest-sync`` and ``guest-sync-delimited`` are always allowed:
the server answers them itself.

Patterns come from ``--allow``/``--deny`` (every listener) and from a listen URL's own
options, e.g. ``unix:/run/monitor.sock?allow=guest-ping,guest-info,guest-get-*``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.commands import SYNC_COMMANDS
from ..errors import InvalidURL


def patterns(text: str | Iterable[str] | None) -> list[str]:
    """Comma-separated patterns (or several such strings) as a list."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    found = [p.strip() for item in items for p in item.split(",")]
    return [p for p in found if p]


class CommandPolicy:
    """Allow and deny patterns for command names."""

    def __init__(self, allow: Iterable[str] | None = None, deny: Iterable[str] = ()) -> None:
        self.allow = None if allow is None else list(allow)
        self.deny = list(deny)
        if self.allow is not None and not self.allow:
            raise InvalidURL("an empty allow list would refuse every command")
        self._decided: dict[str, bool] = {}

    @classmethod
    def combine(cls, base: CommandPolicy | None,
                options: Mapping[str, str]) -> CommandPolicy | None:
        """``base`` (the server-wide policy) refined by a listen URL's options.

        The listener's ``allow`` replaces the server-wide one; denials add up.
        """
        allow = patterns(options.get("allow")) or None
        deny = patterns(options.get("deny"))
        if base is None and allow is None and not deny:
            return None
        return cls(allow if allow is not None else (base.allow if base else None),
                   (base.deny if base else []) + deny)

    def permits(self, command: str) -> bool:
        """Whether clients under this policy may run ``command``."""
        decided = self._decided.get(command)
        if decided is None:
            decided = command in SYNC_COMMANDS or (
                not any(fnmatch.fnmatchcase(command, p) for p in self.deny)
                and (self.allow is None
                     or any(fnmatch.fnmatchcase(command, p) for p in self.allow)))
            if len(self._decided) < 4096:
                self._decided[command] = decided
        return decided

    @staticmethod
    def refusal(command: str) -> str:
        """The agent's own words for a disabled command."""
        return f"Command {command} has been disabled"

    def mark_disabled(self, info: Any) -> None:
        """Set ``enabled: false`` in a ``guest-info`` reply for what this policy refuses."""
        commands = info.get("supported_commands") if isinstance(info, dict) else None
        for entry in commands if isinstance(commands, list) else ():
            if isinstance(entry, dict) and not self.permits(str(entry.get("name"))):
                entry["enabled"] = False

    def __repr__(self) -> str:
        return f"CommandPolicy(allow={self.allow!r}, deny={self.deny!r})"
