"""Profile qproxy's own rows with cProfile (not part of ``make bench``).

    .venv/bin/python bench/profile_rows.py [qproxy-1|qproxy-64|...] [--agent qemu-ga|refagent]

Starts the agent like run.py, runs the row for a few seconds under cProfile and prints
the top functions by total and cumulative time.  For ``qproxy serve`` use py-spy on the
server process instead (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import common
import qproxy_clients


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("row", nargs="?", default="qproxy-1")
    ap.add_argument("--agent", choices=("qemu-ga", "refagent"), default="qemu-ga")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    greenlets = int(args.row.split("-")[1])
    with tempfile.TemporaryDirectory(prefix="qproxy-prof-") as tmp:
        workdir = Path(tmp)
        sock = workdir / "agent.sock"
        argv = (common.qemu_ga_argv(workdir, sock) if args.agent == "qemu-ga"
                else common.refagent_argv(sock))
        with common.started(argv, sock):
            qproxy_clients.api_rate(sock, 0.5, greenlets)  # warm up
            prof = cProfile.Profile()
            prof.enable()
            calls, secs = qproxy_clients.api_rate(sock, args.duration, greenlets)
            prof.disable()
    print(f"{args.row} against {args.agent}: {calls / secs:,.0f} calls/s under cProfile "
          f"({calls:,} calls)")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
