"""Shared helpers for the benchmarks: peer processes, raw socket clients, /proc readings.

Peer processes come from :mod:`qproxy.testbed` (one list of the commands a host's
qemu-ga must refuse); nothing here waits on gevent.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qproxy import testbed
from qproxy.testbed import PeerError, stop_process

PING = b'{"execute":"guest-ping","id":1}\n'


# -- processes ------------------------------------------------------------------------
def wait_for_unix_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 15,
                         logfile: Path | None = None) -> None:
    """Wait until something accepts connections on ``path``; raise if ``proc`` dies."""
    try:
        testbed.wait_for_unix_socket(path, proc, timeout)
    except PeerError as exc:
        out = logfile.read_text(errors="replace") if logfile and logfile.exists() else ""
        raise PeerError(f"{exc} {out.strip()[-500:]}".strip()) from None


@contextlib.contextmanager
def started(argv: list[str], sock: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; wait until it listens on ``sock`` first.

    Its output goes to ``SOCK.log`` next to the socket (never to a pipe nobody reads:
    a chatty server would block on a full pipe).
    """
    logfile = sock.with_name(sock.name + ".log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_for_unix_socket(sock, proc, logfile=logfile)
        yield proc
    finally:
        stop_process(proc)


def qemu_ga_argv(workdir: Path, sock: Path) -> list[str]:
    binary = testbed.qemu_ga_binary()
    if binary is None:
        raise PeerError("qemu-ga is not installed (Debian package qemu-guest-agent; "
                        "'make debs' installs it)")
    return testbed.qemu_ga_argv(binary, sock, workdir / "qga-state")


def refagent_argv(sock: Path) -> list[str]:
    return [sys.executable, "-m", "qproxy", "agent", "--listen", f"unix:{sock}"]


def serve_argv(agent_sock: Path, sock: Path) -> list[str]:
    return [sys.executable, "-m", "qproxy", "serve", f"unix:{agent_sock}",
            "--listen", f"unix:{sock}"]


def serve_available() -> str | None:
    """None if ``qproxy serve`` exists, else why not."""
    proc = subprocess.run([sys.executable, "-m", "qproxy", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return None
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return "not available (" + (tail[-1] if tail else f"exit {proc.returncode}") + ")"


# -- CPU time ---------------------------------------------------------------------------
def cpu_self() -> float:
    """CPU seconds (user + system) this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the block takes longer than ``seconds``."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- /proc ----------------------------------------------------------------------------
def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def machine_info() -> dict[str, Any]:
    import platform

    import gevent
    import ijson

    try:
        backend = ijson.get_backend("yajl2_c").backend_name
    except ImportError:
        backend = f"{ijson.backend} (yajl2_c missing!)"
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cores": os.cpu_count(), "cpu": model,
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "gevent": gevent.__version__, "ijson": getattr(ijson, "__version__", "?"),
        "ijson_backend": backend, "kernel": platform.release(),
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version
        info["qemu.qmp"] = version("qemu.qmp")
    with contextlib.suppress(Exception):
        binary = testbed.qemu_ga_binary()
        if binary:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            info["qemu-ga"] = out.strip().splitlines()[0] if out.strip() else "?"
    return info


# -- raw socket clients (blocking sockets, as tight as Python allows) ------------------------
def raw_connect(path: Path | str, timeout: float = 10.0) -> socket.socket:
    """A blocking Unix socket, synchronised with ``guest-sync-delimited`` (0xFF first).

    The handshake runs with ``timeout``; afterwards the socket is fully blocking (no
    poll() before every recv: ~10% faster).  run.py guards each measurement with a
    SIGALRM watchdog instead.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        raw_sync(sock)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def raw_sync(sock: socket.socket, token: int | None = None) -> None:
    """Send 0xFF + guest-sync-delimited and discard everything up to its answer."""
    token = token if token is not None else (os.getpid() << 20) ^ int(time.time() * 1000) % 10**9
    sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                       "arguments": {"id": token}}).encode() + b"\n")
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the peer closed the connection during sync")
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.lstrip(b"\xff")
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("return") == token:
                if buf:
                    raise ConnectionError(f"unexpected bytes after the sync reply: {buf!r:.80}")
                return


def raw_sequential(path: Path | str, duration: float) -> tuple[int, float]:
    """One guest-ping at a time on a blocking socket; returns (calls, seconds)."""
    sock = raw_connect(path)
    try:
        send, recv, req = sock.sendall, sock.recv, PING
        for _ in range(50):  # warm up
            send(req)
            while not recv(65536).endswith(b"\n"):
                pass
        clock = time.perf_counter
        calls = 0
        start = clock()
        end = start + duration
        while True:
            for _ in range(64):
                send(req)
                data = recv(65536)
                while not data.endswith(b"\n"):
                    data = recv(65536)
            calls += 64
            now = clock()
            if now >= end:
                return calls, now - start
    finally:
        sock.close()


def raw_pipelined(path: Path | str, duration: float, depth: int = 64) -> tuple[int, float]:
    """Keep ``depth`` guest-pings in flight on one blocking socket; returns (calls, seconds)."""
    sock = raw_connect(path)
    try:
        send, recv, req = sock.sendall, sock.recv, PING
        clock = time.perf_counter
        calls = 0
        sent = depth
        send(req * depth)
        start = clock()
        end = start + duration
        sending = True
        check = 0
        while calls < sent:
            data = recv(1 << 18)
            if not data:
                raise ConnectionError("the agent closed the connection")
            n = data.count(b"\n")
            calls += n
            if sending:
                check += n
                if check >= 256:
                    check = 0
                    if clock() >= end:
                        sending = False
                        continue
                send(req * n)
                sent += n
        return calls, clock() - start
    finally:
        sock.close()


def raw_many_clients(path: Path | str, duration: float, clients: int) -> tuple[int, float]:
    """``clients`` connections, each with one guest-ping in flight, driven by one epoll loop."""
    socks = [raw_connect(path) for _ in range(clients)]
    sel = selectors.DefaultSelector()
    try:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        req = PING
        for s in socks:
            s.send(req)
        clock = time.perf_counter
        select = sel.select
        calls = 0
        outstanding = clients
        start = clock()
        end = start + duration
        sending = True
        while outstanding:
            for key, _ in select(5.0):
                s = key.fileobj
                data = s.recv(65536)  # type: ignore[union-attr]
                if not data:
                    raise ConnectionError("the server closed a client connection")
                n = data.count(b"\n")
                if not n:
                    continue  # a partial reply; the rest follows
                calls += n
                outstanding -= n
                if sending:
                    s.send(req)  # type: ignore[union-attr]
                    outstanding += 1
            if sending and clock() >= end:
                sending = False
        return calls, clock() - start
    finally:
        sel.close()
        for s in socks:
            s.close()


def raw_big_call(sock: socket.socket, request: bytes) -> Any:
    """Send one request, read its (big) reply to the newline, json.loads it."""
    sock.sendall(request)
    buf = bytearray()
    recv_into = sock.recv_into
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    while True:
        n = recv_into(view)
        if not n:
            raise ConnectionError("the agent closed the connection")
        buf += view[:n]
        if chunk[n - 1] == 0x0A:
            break
    return json.loads(buf)
