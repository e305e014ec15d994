"""qproxy benchmarks, side by side with their peers, in one run on one machine.

Run with ``make bench`` (``.venv/bin/python bench/run.py``).  It starts a real qemu-ga
(``-m unix-listen``, dangerous commands blocked, state in a temp dir) and the reference
agent (``python -m qproxy agent``) as separate processes, measures every client against
both in interleaved rounds, and prints medians and the ratios that are qproxy's goals.
Results go to ``bench/results/latest.{json,md,png}``.  See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError:
    sys.exit("bench/run.py needs matplotlib for its plot: "
             ".venv/bin/pip install matplotlib  (or: pip install -e '.[bench]')")

import common
import decoder_bench
import qproxy_clients

from qproxy.core.decoder import DEFAULT_MAX_SIZE

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FILE_READ_SIZE = 48 * 1024 * 1024  # qemu-ga's cap on guest-file-read's count


@dataclass(frozen=True)
class Client:
    key: str
    label: str
    family: str  # one plot line per family
    sessions: int


CLIENTS = [
    Client("raw-1", "raw socket, one call at a time", "raw socket", 1),
    Client("raw-64", "raw socket, 64 requests in flight", "raw socket", 64),
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# -- the peers' environment ---------------------------------------------------------------
class QmpPeer:
    """The qemu.qmp clients, in a process of their own (asyncio never meets gevent)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "qmp_peer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, mode: str, path: Path, duration: float,
            concurrency: int) -> tuple[int, float, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"mode": mode, "path": str(path), "duration": duration,
                                          "concurrency": concurrency}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the qemu.qmp peer process died (exit {self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return int(answer["calls"]), float(answer["seconds"]), float(answer["cpu"])

    def close(self) -> None:
        common.stop_process(self.proc)


class Bench:
    def __init__(self, workdir: Path, duration: float, rounds: int) -> None:
        self.workdir = workdir
        self.duration = duration
        self.rounds = rounds
        self.socks = {"qemu-ga": workdir / "qga.sock", "refagent": workdir / "ref.sock"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.qmp: QmpPeer | None = None
        self.serve_note = common.serve_available()
        self.rates: dict[str, dict[str, list[float]]] = {
            a: {c.key: [] for c in CLIENTS} for a in AGENTS}
        self.cpu: dict[str, dict[str, list[float]]] = {
            a: {c.key: [] for c in CLIENTS} for a in AGENTS}
        self.errors: dict[str, str] = {}

    # -- one measurement ------------------------------------------------------------
    def measure(self, agent: str, client: Client) -> tuple[float, float] | None:
        """(calls/s, CPU µs per call) for one client against one agent, or None.

        The CPU is the client side's own: this process for the raw and qproxy API
        clients, the qemu.qmp process for qemu.qmp, the server process for ``serve``.
        """
        path = self.socks[agent]
        d = self.duration
        key = client.key
        cpu0 = common.cpu_self()
        cpu: float | None = None
        if key == "raw-1":
            calls, secs = common.raw_sequential(path, d)
        elif key == "raw-64":
            calls, secs = common.raw_pipelined(path, d, 64)
        elif key == "qmp-legacy":
            assert self.qmp
            calls, secs, cpu = self.qmp.run("legacy", path, d, 1)
        elif key.startswith("qmp-async-"):
            assert self.qmp
            calls, secs, cpu = self.qmp.run("async", path, d, client.sessions)
        elif key.startswith("qproxy-"):
            calls, secs = qproxy_clients.api_rate(path, d, client.sessions)
        elif key == "serve-64":
            if self.serve_note:
                return None
            sock = self.workdir / "serve.sock"
            try:
                with common.started(common.serve_argv(path, sock), sock) as proc:
                    server_cpu0 = common.cpu_of(proc.pid)
                    calls, secs = common.raw_many_clients(sock, d, 64)
                    cpu = common.cpu_of(proc.pid) - server_cpu0
            except common.PeerError as exc:
                self.serve_note = f"not available (failed to start: {exc})"
                return None
        else:
            raise ValueError(key)
        if cpu is None:
            cpu = common.cpu_self() - cpu0
        return calls / secs, cpu / calls * 1e6

    def run_rates(self) -> None:
        n = len(CLIENTS)
        for r in range(self.rounds):
            t0 = time.monotonic()
            for agent in AGENTS:
                order = CLIENTS[r % n:] + CLIENTS[:r % n]  # rotate to spread drift evenly
                for client in order:
                    label = f"{agent}/{client.key}"
                    try:
                        with common.watchdog(60 + 10 * self.duration, label):
                            measured = self.measure(agent, client)
                    except Exception as exc:
                        self.errors[label] = f"{type(exc).__name__}: {exc}"
                        log(f"  {label}: FAILED {self.errors[label]}")
                        continue
                    if measured is not None:
                        self.rates[agent][client.key].append(measured[0])
                        self.cpu[agent][client.key].append(measured[1])
                    gc.collect()
            log(f"round {r + 1}/{self.rounds} of call rates done in "
                f"{time.monotonic() - t0:.1f} s")


# -- decoder --------------------------------------------------------------------------------
def run_decoder(rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stream = decoder_bench.small_stream(200_000)
    chunks = decoder_bench.chunked(stream, 65536)
    dec, base = [], []
    for _ in range(rounds):
        n, t = decoder_bench.timed(decoder_bench.decoder_feed, chunks)
        dec.append(n / t)
        n, t = decoder_bench.timed(decoder_bench.lines_feed, chunks)
        base.append(n / t)
    out["small"] = {"messages": 200_000, "bytes": len(stream), "chunk": 65536,
                    "decoder_msgs_per_s": dec, "lines_json_loads_msgs_per_s": base}
    # The same replies one per read, as a channel with one call in flight sees them.
    singles = stream.splitlines(keepends=True)[:100_000]
    dec, base = [], []
    for _ in range(rounds):
        n, t = decoder_bench.timed(decoder_bench.decoder_feed, singles)
        dec.append(n / t)
        n, t = decoder_bench.timed(decoder_bench.lines_feed, singles)
        base.append(n / t)
    out["small_one_per_read"] = {"messages": len(singles), "decoder_msgs_per_s": dec,
                                 "lines_json_loads_msgs_per_s": base}
    del stream, chunks, singles
    big = decoder_bench.big_reply(DEFAULT_MAX_SIZE)
    loads = []
    for _ in range(rounds):
        _, t = decoder_bench.timed(decoder_bench.whole_loads, big)
        loads.append(len(big) / t / 1e6)
    out["big"] = {"bytes": len(big), "json_loads_whole_mb_per_s": loads}
    for size in (65536, 4096):
        chunks = decoder_bench.chunked(big, size)
        rates = []
        for _ in range(rounds):
            n, t = decoder_bench.timed(decoder_bench.decoder_feed, chunks)
            if n != 1:
                raise RuntimeError(f"the decoder delivered {n} values from one reply")
            rates.append(len(big) / t / 1e6)
        out["big"][f"decoder_{size}_mb_per_s"] = rates
        del chunks
        gc.collect()
    return out


# -- one 48 MiB guest-file-read -------------------------------------------------------------
@contextlib.contextmanager
def qga_file_handle(call: Callable[[str, dict[str, Any]], Any], path: Path) -> Iterator[int]:
    handle = call("guest-file-open", {"path": str(path), "mode": "r"})
    try:
        yield int(handle)
    finally:
        call("guest-file-close", {"handle": handle})


def run_file_read(bench: Bench, rounds: int) -> dict[str, Any]:
    """48 MiB guest-file-read through qemu-ga: raw socket + json.loads against qproxy."""
    data_file = bench.workdir / "blob.bin"
    with open(data_file, "wb") as f:
        f.write(os.urandom(FILE_READ_SIZE))
    expect = base64.b64encode(data_file.read_bytes()[:1024])[:1024].decode()
    sock = bench.socks["qemu-ga"]
    out: dict[str, Any] = {"bytes": FILE_READ_SIZE, "raw_seconds": [], "qproxy_seconds": []}

    # Does the default max_message_size take the reply (64 MiB of base64 plus the envelope)?
    try:
        with qproxy_clients.connected(sock) as agent, \
                qga_file_handle(agent.call, data_file) as h:
            agent.call("guest-file-read", {"handle": h, "count": FILE_READ_SIZE}, timeout=120)
        out["default_max_message_size"] = "ok"
        max_size = DEFAULT_MAX_SIZE
    except Exception as exc:
        out["default_max_message_size"] = (f"fails ({type(exc).__name__}: {str(exc)[:160]}); "
                                           "measured with max_message_size=96 MiB")
        max_size = 96 * 1024 * 1024
    out["max_message_size"] = max_size

    def raw_once() -> float:
        s = common.raw_connect(sock)
        try:
            ident = iter(range(2, 10**9))

            def call(cmd: str, args: dict[str, Any]) -> Any:
                req = json.dumps({"execute": cmd, "arguments": args, "id": next(ident)}).encode()
                return common.raw_big_call(s, req + b"\n")["return"]

            with qga_file_handle(call, data_file) as h:
                req = json.dumps({"execute": "guest-file-read",
                                  "arguments": {"handle": h, "count": FILE_READ_SIZE},
                                  "id": 1}).encode() + b"\n"
                start = time.perf_counter()
                reply = common.raw_big_call(s, req)
                secs = time.perf_counter() - start
            if not reply["return"]["buf-b64"].startswith(expect):
                raise RuntimeError("raw guest-file-read returned the wrong bytes")
            return secs
        finally:
            s.close()

    def qproxy_once() -> float:
        with qproxy_clients.connected(sock, max_message_size=max_size) as agent:
            with qga_file_handle(agent.call, data_file) as h:
                result, secs = qproxy_clients.big_call(
                    agent, "guest-file-read", {"handle": h, "count": FILE_READ_SIZE})
            if result["count"] != FILE_READ_SIZE or not result["buf-b64"].startswith(expect):
                raise RuntimeError("qproxy guest-file-read returned the wrong bytes")
            return secs

    for r in range(rounds):
        pair = [("raw_seconds", raw_once), ("qproxy_seconds", qproxy_once)]
        for key, fn in (pair if r % 2 == 0 else pair[::-1]):
            out[key].append(fn())
            gc.collect()
    data_file.unlink()

    # The same size through the reference agent's qproxy-blob (a synthetic reply).
    size = FILE_READ_SIZE * 4 // 3
    ref = bench.socks["refagent"]
    out["blob_raw_seconds"], out["blob_qproxy_seconds"] = [], []
    blob_req = json.dumps({"execute": "qproxy-blob", "arguments": {"size": size},
                           "id": 1}).encode() + b"\n"
    with qproxy_clients.connected(ref, max_message_size=max_size) as agent:
        for _ in range(rounds):
            s = common.raw_connect(ref)
            try:
                start = time.perf_counter()
                common.raw_big_call(s, blob_req)
                out["blob_raw_seconds"].append(time.perf_counter() - start)
            finally:
                s.close()
            _, secs = qproxy_clients.big_call(agent, "qproxy-blob", {"size": size})
            out["blob_qproxy_seconds"].append(secs)
            gc.collect()
    return out


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


# -- report ---------------------------------------------------------------------------------
def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def build_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    rates = results["rates"]["qemu-ga"]
    med = {k: median(v) for k, v in rates.items()}
    serve_note = results.get("serve_note")
    goals: list[dict[str, Any]] = []

    def ratio_row(label: str, num: float | None, den: float | None, goal: float,
                  detail: str, missing: str | None = None) -> None:
        value = num / den if num is not None and den else None
        goals.append({"row": label, "value": value, "goal": f"≥ {goal:g}",
                      "met": None if value is None else value >= goal,
                      "detail": detail if value is not None else (missing or "not measured")})

    ratio_row("qproxy API, one session, sequential ÷ raw client sequential",
              med["qproxy-1"], med["raw-1"], 0.8,
              f"{fmt_rate(med['qproxy-1'])} vs {fmt_rate(med['raw-1'])} calls/s")
    ratio_row("qproxy API, 64 greenlets ÷ raw client with 64 in flight",
              med["qproxy-64"], med["raw-64"], 0.9,
              f"{fmt_rate(med['qproxy-64'])} vs {fmt_rate(med['raw-64'])} calls/s")
    ratio_row("qproxy serve with 64 raw clients ÷ raw client with 64 in flight",
              med["serve-64"], med["raw-64"], 0.6,
              f"{fmt_rate(med['serve-64'])} vs {fmt_rate(med['raw-64'])} calls/s",
              missing=serve_note)
    ratio_row("qproxy API ÷ qemu.qmp legacy, sequential", med["qproxy-1"], med["qmp-legacy"],
              2.5, f"{fmt_rate(med['qproxy-1'])} vs {fmt_rate(med['qmp-legacy'])} calls/s")
    ratio_row("qproxy API, 64 greenlets ÷ qemu.qmp QMPClient, 64 concurrent",
              med["qproxy-64"], med["qmp-async-64"], 4,
              f"{fmt_rate(med['qproxy-64'])} vs {fmt_rate(med['qmp-async-64'])} calls/s")
    dec = results.get("decoder", {})
    if dec:
        small = dec["small"]
        d, b = median(small["decoder_msgs_per_s"]), median(small["lines_json_loads_msgs_per_s"])
        ratio_row("decoder, small replies, msgs/s ÷ json.loads per line", d, b, 1.0,
                  f"{fmt_rate(d)} vs {fmt_rate(b)} msgs/s (64 KiB chunks)")
        one = dec["small_one_per_read"]
        d, b = median(one["decoder_msgs_per_s"]), median(one["lines_json_loads_msgs_per_s"])
        ratio_row("(extra) decoder, small replies fed one per read ÷ json.loads per line",
                  d, b, 1.0, f"{fmt_rate(d)} vs {fmt_rate(b)} msgs/s (one reply per feed, "
                  "as with one call in flight)")
        big = dec["big"]
        whole = median(big["json_loads_whole_mb_per_s"])
        for size, name in ((65536, "64 KiB"), (4096, "4 KiB")):
            rate = median(big[f"decoder_{size}_mb_per_s"])
            what = ("one 64 MiB reply fed in 64 KiB chunks" if size == 65536 else
                    "the same reply fed in 4 KiB chunks (virtio-serial read size)")
            ratio_row(f"decoder, {what} ÷ json.loads of the whole reply", rate, whole, 0.5,
                      f"{rate:,.0f} vs {whole:,.0f} MB/s ({name} chunks)")
    fr = results.get("file_read", {})
    if "raw_seconds" in fr:
        raw_t, q_t = median(fr["raw_seconds"]), median(fr["qproxy_seconds"])
        ratio_row("48 MiB guest-file-read (qemu-ga): raw socket + json.loads time ÷ "
                  "qproxy API time", raw_t, q_t, 0.8,
                  f"{raw_t:.3f} s vs {q_t:.3f} s; default max_message_size: "
                  f"{fr.get('default_max_message_size')}")
    elif "error" in fr:
        ratio_row("48 MiB guest-file-read (qemu-ga): raw socket + json.loads time ÷ "
                  "qproxy API time", None, None, 0.8, "", missing=fr["error"])
    bpc = results.get("bytes_per_call", {})
    if "ratio" in bpc:
        goals.append({"row": "bytes written to the agent per call ÷ the request's own size",
                      "value": bpc["ratio"], "goal": "1.0 (no sync per call)",
                      "met": abs(bpc["ratio"] - 1.0) < 1e-9,
                      "detail": f"{bpc['bytes_written']:,} B written for {bpc['calls']:,} calls "
                                f"({bpc['request_bytes']:,} B of requests)"})
    scale = results.get("scale", {})
    g = scale.get("greenlets_10000", {})
    if "error" in g or not g:
        goals.append({"row": "10,000 greenlet sessions with a call in flight each "
                             "(reference agent)", "value": None,
                      "goal": "completes; RSS < 200 MB", "met": None if not g else False,
                      "detail": g.get("error", "not measured")})
    else:
        ok = g["failed"] == 0 and g["calls"] == g["expected"] and g["rss_peak_mib"] < 200
        goals.append({"row": "10,000 greenlet sessions with a call in flight each "
                             "(reference agent)", "value": g["rss_peak_mib"],
                      "unit": "MiB", "goal": "completes; RSS < 200 MB", "met": ok,
                      "detail": f"{g['calls']:,}/{g['expected']:,} calls in {g['seconds']:.2f} s "
                                f"(incl. a 1 s hold), {g['max_in_flight']:,} in flight at once, "
                                f"peak RSS {g['rss_peak_mib']:.0f} MiB"})
    s = scale.get("serve_2000", {})
    if "error" in s or not s:
        goals.append({"row": "2,000 clients connected to qproxy serve at once, each making "
                             "calls", "value": None, "goal": "all served; RSS < 200 MB",
                      "met": None, "detail": s.get("error", "not measured")})
    else:
        ok = s["failed"] == 0 and s["calls"] == s["expected"] and s["server_rss_peak_mib"] < 200
        goals.append({"row": "2,000 clients connected to qproxy serve at once, each making "
                             "calls", "value": s["server_rss_peak_mib"], "unit": "MiB",
                      "goal": "all served; RSS < 200 MB", "met": ok,
                      "detail": f"{s['calls']:,}/{s['expected']:,} calls, {s['failed']} failed, "
                                f"{s['seconds']:.2f} s; server RSS "
                                f"{s['server_rss_connected_mib']:.0f} MiB connected, "
                                f"peak {s['server_rss_peak_mib']:.0f} MiB"})
    return goals


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run {results['started']} of qproxy {results.get('qproxy_tree', '?')} — "
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"gevent {m['gevent']}, ijson {m['ijson']} (backend {m['ijson_backend']}), "
        f"qemu.qmp {m.get('qemu.qmp', '?')}, {m.get('qemu-ga', 'qemu-ga ?')}; "
        f"{results['rounds']} rounds of {results['duration']:g} s, medians; "
        f"total {results['seconds']:.0f} s.",
        "",
        "### Goals (ratios within this run)",
        "",
        "| row | value | goal | |",
        "|---|---:|---|---|",
    ]
    for g in results["goals"]:
        v = g["value"]
        value = "—" if v is None else (f"{v:.0f} {g['unit']}" if g.get("unit") else f"{v:.2f}")
        met = {True: "met", False: "**missed**", None: "n/a"}[g["met"]]
        lines.append(f"| {g['row']} | {value} | {g['goal']} | {met} |")
    lines += ["", "Details:", ""]
    lines += [f"- {g['row']}: {g['detail']}" for g in results["goals"]]
    lines += ["", "### Calls per second (guest-ping; median over rounds, min-max) and the "
              "client side's CPU µs per call (median)", "",
              "| client | sessions | " + " | ".join(f"{t} calls/s | CPU µs/call"
                                                    for t in AGENTS.values()) + " |",
              "|---|---:|" + "---:|---:|" * len(AGENTS)]
    for c in CLIENTS:
        cells = []
        for a in AGENTS:
            xs = results["rates"][a][c.key]
            cpu = median(results["cpu_us_per_call"][a][c.key])
            if xs:
                cells.append(f"{median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})")
                cells.append("—" if cpu is None else f"{cpu:.1f}")
            elif c.key == "serve-64" and results.get("serve_note"):
                cells += [results["serve_note"], ""]
            else:
                cells += [results["errors"].get(f"{a}/{c.key}", "—"), ""]
        lines.append(f"| {c.label} | {c.sessions:,} | " + " | ".join(cells) + " |")
    lines += ["", "CPU µs/call is the CPU time of the process doing the client's work divided "
              "by its calls: this process for the raw and qproxy API clients, the qemu.qmp "
              "worker for qemu.qmp, the `qproxy serve` process for the serve row (its 64 raw "
              "clients not included). Unlike calls/s it hardly depends on what else the "
              "machine runs."]
    dec = results.get("decoder")
    if dec:
        big = dec["big"]
        lines += ["", "### Decoder (CPU only)", "",
                  "| what | decoder | baseline |", "|---|---:|---:|",
                  f"| 200,000 small replies, 64 KiB chunks (msgs/s) | "
                  f"{median(dec['small']['decoder_msgs_per_s']):,.0f} | "
                  f"{median(dec['small']['lines_json_loads_msgs_per_s']):,.0f} "
                  "(newline framing + json.loads) |",
                  f"| 100,000 small replies, one per feed (msgs/s) | "
                  f"{median(dec['small_one_per_read']['decoder_msgs_per_s']):,.0f} | "
                  f"{median(dec['small_one_per_read']['lines_json_loads_msgs_per_s']):,.0f} "
                  "(newline framing + json.loads) |",
                  f"| one {big['bytes'] / 2**20:.0f} MiB reply, 64 KiB chunks (MB/s) | "
                  f"{median(big['decoder_65536_mb_per_s']):,.0f} | "
                  f"{median(big['json_loads_whole_mb_per_s']):,.0f} (json.loads, whole) |",
                  f"| the same reply, 4 KiB chunks (MB/s) | "
                  f"{median(big['decoder_4096_mb_per_s']):,.0f} | "
                  f"{median(big['json_loads_whole_mb_per_s']):,.0f} (json.loads, whole) |"]
    fr = results.get("file_read", {})
    if "raw_seconds" in fr:
        lines += ["", "### One 48 MiB read (seconds, median)", "",
                  "| agent | raw socket + json.loads | qproxy API |", "|---|---:|---:|",
                  f"| qemu-ga guest-file-read | {median(fr['raw_seconds']):.3f} | "
                  f"{median(fr['qproxy_seconds']):.3f} |",
                  f"| reference agent qproxy-blob (64 MiB string) | "
                  f"{median(fr['blob_raw_seconds']):.3f} | "
                  f"{median(fr['blob_qproxy_seconds']):.3f} |"]
    if results["errors"]:
        lines += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AGENTS), figsize=(13, 5), sharey=False)
    families: dict[str, list[Client]] = {}
    for c in CLIENTS:
        families.setdefault(c.family, []).append(c)
    for ax, (agent, title) in zip(axes, AGENTS.items(), strict=True):
        for family, clients in families.items():
            pts = [(c.sessions, median(results["rates"][agent][c.key])) for c in clients]
            pts = [(x, y) for x, y in pts if y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=family)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent sessions (greenlets / tasks / requests in flight / clients)")
        ax.set_ylabel("calls/s (guest-ping, median)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"qproxy vs peers — {m['cores']} cores, Python {m['python']}, "
                 f"{results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        results["decoder"] = run_decoder(args.rounds)
        gc.collect()
        log("48 MiB reads…")
        try:
            results["file_read"] = run_file_read(bench, args.rounds)
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
    results["goals"] = build_goals(results)
    md = render_markdown(results)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "latest.md").write_text(md)
    plot(results, args.out / "latest.png")
    print(f"wrote {args.out}/latest.json, latest.md, latest.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
