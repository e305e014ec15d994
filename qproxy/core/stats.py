"""Counters a channel keeps, for diagnostics and benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ChannelStats:
    """What a channel has done since it was created."""

    calls: int = 0
    replies: int = 0
    late_replies: int = 0
    lost_replies: int = 0
    timeouts: int = 0
    abandoned: int = 0
    discarded: int = 0
    unexpected: int = 0
    events: int = 0
    protocol_errors: int = 0
    syncs: int = 0
    reconnects: int = 0
    agent_resets: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)
