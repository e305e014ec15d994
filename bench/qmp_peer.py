"""The qemu.qmp peers, run in their own process so that asyncio and gevent never meet.

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout::

    {"mode": "legacy" | "async", "path": SOCK, "duration": S, "concurrency": N}
    -> {"calls": C, "seconds": T, "cpu": CPU_SECONDS}  or  {"error": "..."}

``legacy`` is ``QEMUMonitorProtocol(path).connect(negotiate=False)`` making one
``cmd("guest-ping")`` at a time; ``async`` is ``QMPClient`` (``await_greeting`` and
``negotiate`` off, as qemu-ga needs) with ``concurrency`` tasks each awaiting
``execute("guest-ping")`` in a loop.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

WARMUP = 50


def run_legacy(path: str, duration: float) -> tuple[int, float]:
    qmp = QEMUMonitorProtocol(path)
    qmp.connect(negotiate=False)
    try:
        cmd = qmp.cmd
        for _ in range(WARMUP):
            cmd("guest-ping")
        clock = time.perf_counter
        calls = 0
        start = clock()
        end = start + duration
        while True:
            for _ in range(16):
                cmd("guest-ping")
            calls += 16
            now = clock()
            if now >= end:
                return calls, now - start
    finally:
        qmp.close()


async def run_async(path: str, duration: float, concurrency: int) -> tuple[int, float]:
    client = QMPClient("bench")
    client.await_greeting = False
    client.negotiate = False
    await client.connect(path)
    try:
        for _ in range(WARMUP):
            await client.execute("guest-ping")
        clock = time.perf_counter
        counts = [0] * concurrency
        start = clock()
        end = start + duration

        async def worker(i: int) -> None:
            execute = client.execute
            n = 0
            while clock() < end:
                await execute("guest-ping")
                n += 1
            counts[i] = n

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return sum(counts), clock() - start
    finally:
        await client.disconnect()


def main() -> int:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the legacy client picks this loop up too
    for line in sys.stdin:
        req: dict[str, Any] = json.loads(line)
        try:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu0 = usage.ru_utime + usage.ru_stime
            if req["mode"] == "legacy":
                calls, seconds = run_legacy(req["path"], req["duration"])
            else:
                calls, seconds = loop.run_until_complete(
                    run_async(req["path"], req["duration"], req["concurrency"]))
            usage = resource.getrusage(resource.RUSAGE_SELF)
            answer: dict[str, Any] = {"calls": calls, "seconds": seconds,
                                      "cpu": usage.ru_utime + usage.ru_stime - cpu0}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
