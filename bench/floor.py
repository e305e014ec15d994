"""The gevent floor: the least a cooperative client can do per sequential call.

One non-blocking socket, a read watcher whose callback parses the reply with
``json.loads`` and wakes the caller through a ``Waiter``, and a timer per call, as any
gevent client that must not block the hub needs.  No routing, no decoder, no errors:
what is left between this row and the blocking raw client is the event loop's own cost,
and what is left between qproxy's sequential row and this one is qproxy's.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from common import PING
from gevent.hub import Waiter, get_hub

WARMUP = 200


def floor_rate(path: Path | str, duration: float) -> tuple[int, float]:
    """guest-ping one at a time, the minimal gevent way.  Returns (calls, seconds)."""
    hub = get_hub()
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(str(path))
    sock.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":7}}\n')
    buf = b""
    while b'{"return": 7}' not in buf:
        buf += sock.recv(65536)
    sock.setblocking(False)
    box: list[Any] = [None]

    def readable() -> None:
        data = sock.recv(65536)
        waiter, box[0] = box[0], None
        if waiter is not None:
            waiter.switch(json.loads(data) if data else None)

    watcher = hub.loop.io(sock.fileno(), 1)
    watcher.start(readable)

    def call() -> None:
        waiter = Waiter(hub)
        box[0] = waiter
        sock.send(PING)
        timer = hub.loop.timer(30)
        timer.start(waiter.switch, None)
        try:
            if waiter.get() is None:
                raise RuntimeError("the agent did not answer")
        finally:
            timer.close()

    try:
        for _ in range(WARMUP):
            call()
        calls = 0
        clock = time.perf_counter
        start = clock()
        end = start + duration
        while True:
            for _ in range(64):
                call()
            calls += 64
            now = clock()
            if now >= end:
                return calls, now - start
    finally:
        watcher.close()
        sock.close()
