"""Real ttys for the serial and chardev tests: socat pty pairs, qemu-ga on a pty, RFC 2217.

A *line* is ``socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B``: bytes written to the
pty at ``A`` come out of the pty at ``B`` and back.  A real ``qemu-ga -m isa-serial``
sits on ``A``; qproxy opens ``B``.  Killing socat is a cable pulled out: both ptys lose
their other side at once.

Run as a script, this module is a small RFC 2217 server (pyserial's PortManager) in
front of a serial device: ``python ptys.py rfc2217-server DEVICE`` prints its port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event

import qproxy
from peers import qemu_ga_binary, stop_process
from qproxy import testbed


def socat_binary() -> str:
    """Path of socat; fails the test if it is not installed."""
    path = shutil.which("socat")
    if path is None:
        pytest.fail("socat is not installed (Debian package socat)", pytrace=False)
    return path


def _output(proc: subprocess.Popen[bytes]) -> str:
    if proc.stdout is None:
        return ""
    return proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""


class Line:
    """A socat pty pair with links ``A`` and ``B`` in ``workdir``; restartable."""

    def __init__(self, workdir: Path, name: str = "line") -> None:
        self.a = workdir / f"{name}-A"
        self.b = workdir / f"{name}-B"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> None:
        """Start socat and wait until both pty links exist."""
        for link in (self.a, self.b):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()  # left over by a SIGKILLed socat
        proc = subprocess.Popen(
            [socat_binary(), f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.proc = proc
        deadline = time.monotonic() + timeout
        while not (self.a.exists() and self.b.exists()):
            if proc.poll() is not None:
                pytest.fail(f"socat exited with {proc.returncode}: {_output(proc)}",
                            pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"socat made no pty links {self.a}, {self.b} in {timeout} s",
                            pytrace=False)
            time.sleep(0.01)

    def kill(self) -> None:
        """Pull the cable: SIGKILL socat (its links stay behind, dangling)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop socat if it runs."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class QemuGa:
    """A real ``qemu-ga -m isa-serial -p DEVICE`` with dangerous commands blocked."""

    def __init__(self, workdir: Path, device: Path) -> None:
        self.device = device
        self.statedir = workdir / "qga-state"
        self.statedir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start qemu-ga on the device; fail loudly if it exits at once."""
        if not self.device.exists():
            pytest.fail(f"cannot start qemu-ga: {self.device} does not exist", pytrace=False)
        proc = subprocess.Popen(
            testbed.qemu_ga_argv(qemu_ga_binary(), self.device, self.statedir, "isa-serial"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.proc = proc
        time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"qemu-ga exited with {proc.returncode}: {_output(proc)}",
                        pytrace=False)

    def check(self) -> None:
        """Fail the test (with its output) if qemu-ga died."""
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"qemu-ga exited with {self.proc.returncode}: {_output(self.proc)}",
                        pytrace=False)

    def stop(self) -> None:
        """Stop qemu-ga if it runs."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Rig:
    """qemu-ga on ``line.a``; the test talks to ``line.b``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.line = Line(workdir)
        self.qga = QemuGa(workdir, self.line.a)

    def start(self) -> None:
        """Start socat, then qemu-ga (which needs the pty link to exist)."""
        self.line.start()
        self.qga.start()

    def restart(self) -> None:
        """Bring a new cable and a new agent (the old agent holds a dead pty)."""
        self.qga.stop()
        self.line.stop()
        self.start()

    def stop(self) -> None:
        """Stop everything this rig started."""
        self.qga.stop()
        self.line.stop()


@contextlib.contextmanager
def rig(workdir: Path) -> Iterator[Rig]:
    """A started :class:`Rig`, stopped afterwards."""
    r = Rig(workdir)
    try:
        r.start()
        yield r
    finally:
        r.stop()


@contextlib.contextmanager
def rfc2217_server(device: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """This module as an RFC 2217 server on 127.0.0.1 for ``device``; yields (proc, port)."""
    proc = subprocess.Popen([sys.executable, __file__, "rfc2217-server", str(device)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode(errors="replace").strip()
        if not first.startswith("PORT "):
            proc.wait(2)
            pytest.fail(f"RFC 2217 server did not start: {first} {_output(proc)}",
                        pytrace=False)
        yield proc, int(first.split()[1])
    finally:
        stop_process(proc)


# -- scenarios shared by the serial and chardev tests ----------------------------------
#: Bytes injected toward qproxy (written into the agent's pty, so they arrive as if the
#: agent sent them): garbage, partial JSON, stray 0xFF, non-UTF-8.
NOISE_TO_CLIENT = [b"garbage\n", b'{"return": {"half', b"\x00\x01\xfe\x80", b"}}]]\n",
                   b'{"return": 1', b"\xff", b'{"error": ', b"\r\n\r\n", b"\xc3\x28zz"]
#: Bytes injected toward the agent (it answers them with id-less parse errors).  No
#: unclosed "{": qemu-ga would swallow every later request until a 0xFF resets it (see
#: UNCLOSED_TO_AGENT).
NOISE_TO_AGENT = [b"\x00junk\x01\n", b"}}]]\n", b"\xfe\xfe\n", b'"half a string\n']
#: An unclosed object toward the agent: only an in-band 0xFF re-sync gets it out.
UNCLOSED_TO_AGENT = b'{"execute":'



def connect(url: str, rig: Rig | None = None, timeout: float = 10.0) -> qproxy.Agent:
    """qproxy.connect, failing the test loudly (with qemu-ga's output) if it cannot."""
    try:
        return qproxy.connect(url, timeout=timeout)
    except qproxy.ConnectFailed as exc:
        if rig is not None:
            rig.qga.check()
        pytest.fail(f"cannot reach qemu-ga through {url}: {exc}", pytrace=False)


def concurrent_syncs(agent: qproxy.Agent, greenlets: int = 20, calls: int = 50,
                     timeout: float = 10.0) -> None:
    """``greenlets`` callers x ``calls`` guest-sync each; every caller gets its own ids."""
    def worker(g: int) -> list[tuple[int, Any]]:
        got = []
        for i in range(calls):
            n = g * 100_000 + i
            got.append((n, agent.call("guest-sync", {"id": n}, timeout=timeout)))
        return got

    jobs = [gevent.spawn(worker, g) for g in range(greenlets)]
    done = gevent.joinall(jobs, timeout=timeout * 2, raise_error=True)
    assert len(done) == greenlets, "callers did not finish in time"
    for job in jobs:
        assert [n for n, r in job.value] == [r for n, r in job.value]


def wait_until_answers(agent: qproxy.Agent, timeout: float) -> float:
    """Ping until the agent answers; return how long it took; fail after ``timeout``."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            agent.call("guest-ping", timeout=1.0)
            return time.monotonic() - start
        except qproxy.QProxyError as exc:
            last = exc
            gevent.sleep(0.05)
    pytest.fail(f"the agent did not answer again within {timeout} s: {last}", pytrace=False)


def inject(fd: int, data: bytes, timeout: float = 2.0) -> None:
    """Write all of ``data`` to a non-blocking pty, waiting while its buffer is full."""
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            assert time.monotonic() < deadline, "the pty stayed full: nobody reads the line"
            gevent.sleep(0.005)


def noisy_calls(agent: qproxy.Agent, rig: Rig, rounds: int = 6,
                call_timeout: float = 2.0) -> Counter[str]:
    """Callers run guest-sync while noise is injected both ways; return their outcomes.

    Every call must either return its own id or fail with a qproxy error, within its
    timeout (plus slack): never hang, never get another caller's reply.
    """
    to_client = os.open(rig.line.a, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    to_agent = os.open(rig.line.b, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    outcomes: Counter[str] = Counter()
    stop = Event()

    def caller(g: int) -> None:
        i = 0
        while not stop.is_set():
            n = g * 100_000 + i
            i += 1
            started = time.monotonic()
            try:
                assert agent.call("guest-sync", {"id": n}, timeout=call_timeout) == n
                outcomes["ok"] += 1
            except qproxy.QProxyError as exc:
                outcomes[type(exc).__name__] += 1
            elapsed = time.monotonic() - started
            assert elapsed < call_timeout + 1.0, f"a call took {elapsed:.1f} s"
            gevent.sleep(0.002)

    callers = [gevent.spawn(caller, g) for g in range(5)]
    try:
        gevent.sleep(0.1)
        for k in range(rounds):
            for chunk in NOISE_TO_CLIENT:
                inject(to_client, chunk)
                gevent.sleep(0.01)
            inject(to_agent, NOISE_TO_AGENT[k % len(NOISE_TO_AGENT)])
            gevent.sleep(0.05)
    finally:
        stop.set()
        os.close(to_client)
        os.close(to_agent)
        gevent.joinall(callers, timeout=call_timeout + 2.0, raise_error=True)
    assert all(c.ready() for c in callers), "a caller hung"
    return outcomes


# -- the RFC 2217 server (runs as its own process, plain threads) ----------------------
class _Writer:
    """What PortManager wants as its connection: an object with write()."""

    def __init__(self, conn: Any) -> None:
        import threading

        self.conn = conn
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.conn.sendall(data)


def _serve_rfc2217(device: str) -> None:
    import socket
    import threading

    import serial
    from serial.rfc2217 import PortManager

    class PtyPort(serial.Serial):  # type: ignore[misc]
        """A pty has no modem lines: report them idle instead of failing the ioctl."""

        cts = dsr = ri = cd = property(lambda self: False)

        def _update_rts_state(self) -> None:
            pass

        def _update_dtr_state(self) -> None:
            pass

    port = PtyPort(device, 115200, timeout=0.2)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print("PORT", listener.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        manager = PortManager(port, _Writer(conn))
        alive = threading.Event()
        alive.set()

        def serial_to_net(conn: socket.socket = conn, manager: PortManager = manager,
                          alive: threading.Event = alive) -> None:
            while alive.is_set():
                data = port.read(port.in_waiting or 1)
                if data:
                    try:
                        manager.connection.write(b"".join(manager.escape(data)))
                    except OSError:
                        break
                manager.check_modem_lines()

        reader = threading.Thread(target=serial_to_net, daemon=True)
        reader.start()
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                port.write(b"".join(manager.filter(data)))
        except OSError:
            pass
        alive.clear()
        reader.join()
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "rfc2217-server":
        _serve_rfc2217(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} rfc2217-server DEVICE")
