"""qproxy benchmarks, side by side with their peers, in one run on one machine.

Run with ``make bench`` (``.venv/bin/python bench/run.py``).  It starts a real qemu-ga
(``-m unix-listen``, dangerous commands blocked, state in a temp dir) and the reference
agent (``python -m qproxy agent``) as separate processes, measures every client against
both in interleaved rounds, and prints medians and the ratios that are qproxy's goals.
Results go to ``bench/results/latest.{json,md,png}``.  See docs/benchmarks.md.

The parts: rows.py (what is measured), rates.py (call rates), decoder_bench.py, file_read.py,
report.py (goals and the markdown), output.py (the files and the plot); this module starts
the peers and runs them in order.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import decoder_bench
import file_read
import output
import qproxy_clients
import report
from rates import Bench, QmpPeer, log

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# -- scale ----------------------------------------------------------------------------------
def run_worker(args: list[str], timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE / "scale.py"), *args],
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scale.py {args[0]} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-400:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_scale(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["greenlets_10000"] = run_worker(
            ["greenlets", str(bench.socks["refagent"]), "10000", "3"])
    except Exception as exc:
        out["greenlets_10000"] = {"error": str(exc)}
    if bench.serve_note:
        out["serve_2000"] = {"error": bench.serve_note}
        return out
    sock = bench.workdir / "serve-scale.sock"
    try:
        with common.started(common.serve_argv(bench.socks["qemu-ga"], sock), sock) as proc:
            out["serve_2000"] = run_worker(["serve-clients", str(sock), "2000", "5",
                                            str(proc.pid)])
    except Exception as exc:
        out["serve_2000"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def qproxy_tree() -> str:
    """The commit measured, "+changes" when qproxy/ differs from it (the working tree runs)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "qproxy"],
                               cwd=HERE.parent, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + (" +uncommitted changes in qproxy/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per measurement (default 5)")
    ap.add_argument("--duration", type=float, default=1.0,
                    help="seconds per call-rate measurement (default 1)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 0.3 s (a smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 2, 0.3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "qproxy_tree": qproxy_tree(),
        "machine": common.machine_info(), "rounds": args.rounds, "duration": args.duration}
    m = results["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), {m['implementation']} {m['python']}, "
          f"gevent {m['gevent']}, ijson {m['ijson']} backend {m['ijson_backend']}, "
          f"qemu.qmp {m.get('qemu.qmp')}, {m.get('qemu-ga')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qproxy-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        bench = Bench(Path(tmp), args.duration, args.rounds)
        if bench.serve_note:
            log(f"qproxy serve: {bench.serve_note}")
        stack.enter_context(common.started(
            common.qemu_ga_argv(bench.workdir, bench.socks["qemu-ga"]), bench.socks["qemu-ga"]))
        stack.enter_context(common.started(
            common.refagent_argv(bench.socks["refagent"]), bench.socks["refagent"]))
        bench.qmp = QmpPeer()
        stack.callback(bench.qmp.close)
        bench.run_rates()
        results["rates"] = bench.rates
        results["cpu_us_per_call"] = bench.cpu
        results["serve_note"] = bench.serve_note
        log("decoder…")
        results["decoder"] = decoder_bench.run_decoder(args.rounds)
        gc.collect()
        log("48 MiB reads…")
        try:
            results["file_read"] = file_read.run_file_read(bench, args.rounds)
        except Exception as exc:
            results["file_read"] = {"error": f"{type(exc).__name__}: {exc}"}
        gc.collect()
        log("bytes per call…")
        results["bytes_per_call"] = qproxy_clients.bytes_per_call(bench.socks["qemu-ga"])
        log("scale…")
        results["scale"] = run_scale(bench)
        results["serve_note"] = bench.serve_note
        results["errors"] = bench.errors
    results["seconds"] = time.monotonic() - t_start
    results["goals"] = report.build_goals(results)
    md = report.render_markdown(results)
    print(md)
    output.write(results, md, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
