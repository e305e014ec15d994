"""qproxy's own clients for the benchmarks: the synchronous API from 1..N greenlets."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent

import qproxy

WARMUP = 200


@contextlib.contextmanager
def connected(path: Path | str, **kwargs: Any) -> Iterator[qproxy.Agent]:
    """``qproxy.connect()`` to a Unix socket; closed on exit, fd included.

    qemu-ga serves one connection at a time, so the next client must find the fd
    closed.  ``Agent.close()`` closes it at once when nobody waits on it; the yield
    after closing covers a close that had to wake a waiting greenlet first.
    """
    agent = qproxy.connect(f"unix:{path}", **kwargs)
    try:
        yield agent
    finally:
        agent.close()
        gevent.sleep(0)


def api_rate(path: Path | str, duration: float, greenlets: int) -> tuple[int, float]:
    """guest-ping through one ``qproxy.connect()`` agent from ``greenlets`` greenlets.

    With ``greenlets == 1`` the calls are made from the calling greenlet itself, the way a
    plain script uses the API.  Returns (calls completed, seconds).
    """
    with connected(path) as agent:
        call = agent.call
        for _ in range(WARMUP):
            call("guest-ping")
        clock = time.perf_counter
        if greenlets == 1:
            calls = 0
            start = clock()
            end = start + duration
            while True:
                for _ in range(64):
                    call("guest-ping")
                calls += 64
                now = clock()
                if now >= end:
                    return calls, now - start
        stop = False
        counts = [0] * greenlets

        def worker(i: int) -> None:
            n = 0
            while not stop:
                call("guest-ping")
                n += 1
            counts[i] = n

        start = clock()
        workers = [gevent.spawn(worker, i) for i in range(greenlets)]
        gevent.sleep(duration)
        stop = True
        gevent.joinall(workers, raise_error=True)
        return sum(counts), clock() - start


def request_bytes(first_id: int, count: int, command: str = "guest-ping") -> int:
    """The size of ``count`` requests serialised compactly, ids ``first_id``, ``first_id+1``…"""
    return sum(len(b'{"execute":"%s","id":%d}\n' % (command.encode(), i))
               for i in range(first_id, first_id + count))


def bytes_per_call(path: Path | str, sequential: int = 2000, greenlets: int = 64,
                   each: int = 50) -> dict[str, Any]:
    """Bytes the channel writes per call, against the requests' own serialised size.

    Channel ids count up from 1 per channel, one per submitted call (syncs use none),
    so the exact request bytes are known from ``stats.calls``.
    """
    with connected(path) as agent:
        stats = agent.channel.stats
        out0, calls0 = stats.bytes_out, stats.calls
        for _ in range(sequential):
            agent.call("guest-ping")
        workers = [gevent.spawn(lambda: [agent.call("guest-ping") for _ in range(each)])
                   for _ in range(greenlets)]
        gevent.joinall(workers, raise_error=True)
        written = stats.bytes_out - out0
        calls = stats.calls - calls0
        own = request_bytes(calls0 + 1, calls)
        return {"calls": calls, "bytes_written": written, "request_bytes": own,
                "syncs": stats.syncs, "ratio": written / own}


def big_call(agent: qproxy.Agent, command: str, arguments: dict[str, Any]) -> tuple[Any, float]:
    """One call, timed."""
    start = time.perf_counter()
    result = agent.call(command, arguments, timeout=300)
    return result, time.perf_counter() - start
