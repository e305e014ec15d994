"""Call rates: every client against both agents, in interleaved rounds."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import common
import floor
import qproxy_clients
from rows import AGENTS, CLIENTS, Client

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
        elif key == "floor-1":
            calls, secs = floor.floor_rate(path, d)
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
