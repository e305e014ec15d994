"""``qproxy demo``: one agent, one ``qproxy serve``, many different clients at once.

No VM needed: it starts a real qemu-ga in unix-listen mode when one is installed
(with every command that could harm the host blocked), the reference agent otherwise,
puts ``qproxy serve`` in front of it and runs, all at the same time, a raw-socket client
doing the guest-sync-delimited dance, a libvirt-style guest-sync client, the Python API
from several greenlets, and the ``qproxy call`` command line.  Then it prints what each
did and how long it took, and cleans up (processes, temporary directory), even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent import socket, subprocess

from .. import testbed

EXAMPLES = """examples:
  qproxy demo
  qproxy demo --refagent --greenlets 16 --calls 200
  make demo
"""


@dataclass
class Outcome:
    """What one client did."""

    client: str
    did: str
    seconds: float
    ok: bool = True


def add_parser(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="show many clients sharing one agent (no VM needed)",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refagent", action="store_true",
                   help="use the reference agent even if qemu-ga is installed")
    p.add_argument("--greenlets", type=int, default=8, metavar="N",
                   help="greenlets sharing one Python API connection (default 8)")
    p.add_argument("--calls", type=int, default=100, metavar="N",
                   help="calls per raw client and per greenlet (default 100)")
    p.set_defaults(run=run)


@contextlib.contextmanager
def _process(argv: list[str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        testbed.stop_process(proc)


def _wait_for_socket(path: Path, proc: subprocess.Popen, what: str) -> None:
    try:
        testbed.wait_for_unix_socket(path, proc, what=what, sleep=gevent.sleep)
    except testbed.PeerError as exc:
        raise RuntimeError(str(exc)) from None


def _timed(client: str, job: Callable[[], str]) -> Outcome:
    started = time.perf_counter()
    try:
        did = job()
        ok = True
    except Exception as exc:
        did, ok = f"FAILED: {type(exc).__name__}: {exc}", False
    return Outcome(client, did, time.perf_counter() - started, ok)


class _Lines:
    """A raw protocol client over a Unix socket, line by line."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, message: dict[str, Any], prefix: bytes = b"") -> None:
        self.sock.sendall(prefix + json.dumps(message).encode() + b"\n")

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def reply(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.line().lstrip(b"\xff"))
        return value


def _raw_delimited(path: Path, calls: int) -> str:
    client = _Lines(path)
    try:
        sync_id = random.randint(1, 2**31 - 1)
        client.send({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}},
                    prefix=b"\xff")
        skipped = 0
        while True:
            line = client.line()
            ff = line.rfind(b"\xff")
            if ff >= 0 and json.loads(line[ff + 1:]) == {"return": sync_id}:
                break
            skipped += 1
        for i in range(calls):
            client.send({"execute": "guest-ping", "id": f"raw-{i}"})
        for i in range(calls):
            reply = client.reply()
            if reply != {"return": {}, "id": f"raw-{i}"}:
                raise AssertionError(f"unexpected reply {reply}")
        return (f"0xFF + guest-sync-delimited (skipped {skipped} stray error), "
                f"{calls} pipelined guest-ping, all ids its own, in order")
    finally:
        client.sock.close()


def _raw_libvirt(path: Path, calls: int) -> str:
    client = _Lines(path)
    try:
        sync_id = int(time.time() * 1000)
        client.send({"execute": "guest-sync", "arguments": {"id": sync_id}})
        if client.reply() != {"return": sync_id}:
            raise AssertionError("guest-sync was not answered")
        for i in range(calls):
            client.send({"execute": "guest-info", "id": i})
            reply = client.reply()
            if reply.get("id") != i or "return" not in reply:
                raise AssertionError(f"unexpected reply {reply!r:.200}")
        return f"guest-sync {{id: ms since epoch}}, then {calls} guest-info one at a time"
    finally:
        client.sock.close()


def _python_api(path: Path, greenlets: int, calls: int) -> str:
    from ..api import connect

    with connect(f"unix:{path}", timeout=10) as agent:
        def work(n: int) -> int:
            for i in range(calls):
                if i % 10 == 0:
                    agent.info()
                else:
                    agent.ping()
            return calls
        jobs = [gevent.spawn(work, n) for n in range(greenlets)]
        try:
            gevent.joinall(jobs, raise_error=True)
        finally:
            gevent.killall(jobs)
        total = sum(job.value for job in jobs)
    return (f"qproxy.connect() shared by {greenlets} greenlets: {total} calls "
            "(guest-ping, guest-info)")


def _cli(path: Path) -> str:
    argv = [sys.executable, "-m", "qproxy", "call", f"unix:{path}", "guest-info", "--compact"]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr.decode().strip()}")
    info = json.loads(done.stdout)
    bad = subprocess.run([sys.executable, "-m", "qproxy", "call", f"unix:{path}",
                          "guest-no-such-command"], capture_output=True, timeout=60)
    return (f"qproxy call guest-info -> version {info['version']}, "
            f"{len(info['supported_commands'])} commands; a bad command -> exit "
            f"{bad.returncode}, {bad.stderr.decode().strip().split(':')[0]}")


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 if every client got what it expected."""
    main = gevent.getcurrent()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, lambda: main.throw(KeyboardInterrupt()))
    tmp = Path(tempfile.mkdtemp(prefix="qproxy-demo-"))
    try:
        with contextlib.ExitStack() as stack:
            return _demo(args, tmp, stack)
    except KeyboardInterrupt:
        print("\nqproxy demo: interrupted; cleaned up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"qproxy demo: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _demo(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> int:
    agent_sock = tmp / "agent.sock"
    proxy_sock = tmp / "proxy.sock"
    qemu_ga = None if args.refagent else testbed.qemu_ga_binary()
    started = time.perf_counter()
    if qemu_ga is not None:
        argv = testbed.qemu_ga_argv(qemu_ga, agent_sock, tmp / "qga-state")
        agent_desc = f"qemu-ga ({qemu_ga}, unix-listen; host-changing commands blocked)"
    else:
        argv = [sys.executable, "-m", "qproxy", "agent", "--listen", f"unix:{agent_sock}"]
        agent_desc = ("the reference agent" if args.refagent
                      else "the reference agent (qemu-ga is not installed)")
    agent = stack.enter_context(_process(argv))
    _wait_for_socket(agent_sock, agent, "the agent")
    server = stack.enter_context(_process(
        [sys.executable, "-m", "qproxy", "serve", f"unix:{agent_sock}", "--listen",
         f"unix:{proxy_sock}", "--quiet"]))
    _wait_for_socket(proxy_sock, server, "qproxy serve")
    setup = time.perf_counter() - started

    print("qproxy demo: many clients, one guest agent")
    print(f"  agent   {agent_desc}")
    print(f"          at {agent_sock}")
    print(f"  proxy   qproxy serve, clients connect to {proxy_sock}  (both up in {setup:.2f} s)")
    print("  running every client at the same time ...", flush=True)

    calls = max(1, args.calls)
    greenlets = max(1, args.greenlets)
    jobs = [
        gevent.spawn(_timed, "raw socket, qemu-ga-client style",
                     lambda: _raw_delimited(proxy_sock, calls)),
        gevent.spawn(_timed, "raw socket, libvirt style",
                     lambda: _raw_libvirt(proxy_sock, max(1, calls // 5))),
        gevent.spawn(_timed, "Python API", lambda: _python_api(proxy_sock, greenlets, calls)),
        gevent.spawn(_timed, "command line", lambda: _cli(proxy_sock)),
    ]
    began = time.perf_counter()
    try:
        gevent.joinall(jobs)
    finally:
        gevent.killall(jobs)
    wall = time.perf_counter() - began
    outcomes: list[Outcome] = [job.value for job in jobs]
    width = max(len(o.client) for o in outcomes)
    print()
    for o in outcomes:
        mark = "ok  " if o.ok else "FAIL"
        print(f"  {mark} {o.client:<{width}}  {o.seconds * 1000:8.1f} ms  {o.did}")
    print()
    all_ok = all(o.ok for o in outcomes)
    if server.poll() is not None:
        print("  FAIL qproxy serve died during the demo")
        all_ok = False
    print(f"  {len(outcomes)} kinds of client on 5 proxy connections (the API's "
          f"{greenlets} greenlets share one), one agent connection; {wall:.2f} s wall time.")
    print("  " + ("Every client got exactly its own replies, in order."
                  if all_ok else "Some clients failed (see above)."))
    return 0 if all_ok else 1
