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
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import BLOCKED_RPCS, qemu_ga_binary, stop_process


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
            [qemu_ga_binary(), "-m", "isa-serial", "-p", str(self.device),
             "-t", str(self.statedir), "-f", str(self.statedir / "qemu-ga.pid"),
             "--block-rpcs", BLOCKED_RPCS],
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


# -- the RFC 2217 server (runs as its own process, plain threads) ----------------------
def _serve_rfc2217(device: str) -> None:
    import socket
    import threading

    import serial
    from serial.rfc2217 import PortManager

    port = serial.Serial(device, 115200, timeout=0.2)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print("PORT", listener.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        manager = PortManager(port, conn)
        alive = threading.Event()
        alive.set()

        def serial_to_net(conn: socket.socket = conn, manager: PortManager = manager,
                          alive: threading.Event = alive) -> None:
            while alive.is_set():
                data = port.read(port.in_waiting or 1)
                if data:
                    try:
                        conn.sendall(b"".join(manager.escape(data)))
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
