"""What the call-rate benchmark measures: the client rows, the agent columns, the median."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Client:
    key: str
    label: str
    family: str  # one plot line per family
    sessions: int


CLIENTS = [
    Client("raw-1", "raw socket, one call at a time", "raw socket", 1),
    Client("raw-64", "raw socket, 64 requests in flight", "raw socket", 64),
    Client("floor-1", "gevent floor: fd watcher + Waiter + json.loads, one call at a time",
           "gevent floor", 1),
    Client("qmp-legacy", "qemu.qmp legacy QEMUMonitorProtocol, sequential",
           "qemu.qmp legacy (sync)", 1),
    Client("qmp-async-1", "qemu.qmp QMPClient (asyncio), sequential",
           "qemu.qmp QMPClient (asyncio)", 1),
    Client("qmp-async-64", "qemu.qmp QMPClient (asyncio), 64 concurrent",
           "qemu.qmp QMPClient (asyncio)", 64),
    Client("qproxy-1", "qproxy API, one greenlet", "qproxy API (greenlets)", 1),
    Client("qproxy-8", "qproxy API, 8 greenlets", "qproxy API (greenlets)", 8),
    Client("qproxy-64", "qproxy API, 64 greenlets", "qproxy API (greenlets)", 64),
    Client("qproxy-1024", "qproxy API, 1,024 greenlets", "qproxy API (greenlets)", 1024),
    Client("serve-64", "qproxy serve, 64 raw socket clients", "qproxy serve (raw clients)", 64),
]
AGENTS = {"qemu-ga": "qemu-ga (unix-listen)", "refagent": "reference agent (qproxy agent)"}


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
