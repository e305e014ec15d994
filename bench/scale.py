"""Scale workers, each run as its own process so that its RSS is its own.

``scale.py greenlets SOCK N CALLS``
    N greenlets share one ``qproxy.connect()`` agent (the reference agent); each makes
    CALLS guest-pings.  A ``qproxy-sleep`` sent first holds the agent for a second, so all
    N first calls are in flight together.  Reports this process's peak RSS.
``scale.py serve-clients SOCK N CALLS SERVER_PID``
    N raw clients connect to ``qproxy serve`` (gevent sockets, no monkey-patching), all
    connect first, then each makes CALLS guest-pings one at a time.  Reports the server
    process's RSS, read from /proc.

The last line on stdout is a JSON object with the figures.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import gevent
from common import PING, proc_status_kib, raw_sync
from gevent import socket as gsocket
from gevent.event import Event


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def greenlets(sock: str, n: int, calls: int, hold: float = 1.0) -> dict[str, Any]:
    import qproxy

    rss0 = proc_status_kib("self", "VmRSS")
    agent = qproxy.connect(f"unix:{sock}", default_timeout=120)
    stats = agent.channel.stats
    peak = 0
    done = 0
    failed: list[str] = []

    def sampler() -> None:
        nonlocal peak
        while True:
            peak = max(peak, stats.calls - stats.replies)
            gevent.sleep(0.001)

    def worker() -> None:
        nonlocal done
        try:
            for _ in range(calls):
                agent.call("guest-ping")
                done += 1
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")

    # The agent runs one command at a time: a 1 s qproxy-sleep sent first holds every
    # guest-ping behind it, so all N calls are truly in flight together.
    blocker = gevent.spawn(agent.call, "qproxy-sleep", {"seconds": hold})
    gevent.sleep(0)
    watch = gevent.spawn(sampler)
    start = time.perf_counter()
    workers = [gevent.spawn(worker) for _ in range(n)]
    gevent.joinall(workers)
    blocker.get()
    seconds = time.perf_counter() - start
    watch.kill()
    agent.close()
    return {"sessions": n, "calls": done, "expected": n * calls, "failed": len(failed),
            "first_failure": failed[0] if failed else None, "seconds": seconds,
            "max_in_flight": peak, "rss_before_mib": rss0 / 1024,
            "rss_peak_mib": proc_status_kib("self", "VmHWM") / 1024}


def serve_clients(sock: str, n: int, calls: int, server_pid: int) -> dict[str, Any]:
    raise_nofile(n + 256)
    rss0 = proc_status_kib(server_pid, "VmRSS")
    all_connected = Event()
    connected = 0
    done = 0
    failed: list[str] = []

    def client() -> None:
        nonlocal connected, done
        s = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
        try:
            s.settimeout(120)
            s.connect(sock)
            raw_sync(s)
            connected += 1
            if connected == n:
                all_connected.set()
            all_connected.wait()
            for _ in range(calls):
                s.sendall(PING)
                data = s.recv(65536)
                while not data.endswith(b"\n"):
                    more = s.recv(65536)
                    if not more:
                        raise ConnectionError("server closed the connection")
                    data += more
                if b'"return"' not in data:
                    raise RuntimeError(f"unexpected reply {data!r:.100}")
                done += 1
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            if not all_connected.is_set() and connected + len(failed) >= n:
                all_connected.set()
        finally:
            s.close()

    start = time.perf_counter()
    workers = [gevent.spawn(client) for _ in range(n)]
    all_connected.wait(120)
    connect_seconds = time.perf_counter() - start
    rss_connected = proc_status_kib(server_pid, "VmRSS")
    gevent.joinall(workers)
    seconds = time.perf_counter() - start
    return {"clients": n, "connected": connected, "calls": done, "expected": n * calls,
            "failed": len(failed), "first_failure": failed[0] if failed else None,
            "seconds": seconds, "connect_seconds": connect_seconds,
            "server_rss_before_mib": rss0 / 1024,
            "server_rss_connected_mib": rss_connected / 1024,
            "server_rss_after_mib": proc_status_kib(server_pid, "VmRSS") / 1024,
            "server_rss_peak_mib": proc_status_kib(server_pid, "VmHWM") / 1024}


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "greenlets":
        result = greenlets(argv[1], int(argv[2]), int(argv[3]))
    elif mode == "serve-clients":
        result = serve_clients(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
