"""Real peers as processes: qemu-ga with host-changing commands blocked, and helpers.

``qproxy demo``, the test suite and the benchmarks all start a real qemu-ga on the
host they run on, where it runs as root: they all take its command line from
:func:`qemu_ga_argv`, so the list of commands it must refuse (:data:`BLOCKED_RPCS`)
exists once.  Nothing here imports gevent or the rest of qproxy; pass
``sleep=gevent.sleep`` to wait cooperatively.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Commands a qemu-ga started on a real host must never run: they would stop, freeze,
#: suspend or reconfigure the machine itself.  Test them in a VM only.
BLOCKED_RPCS: tuple[str, ...] = (
    "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid",
    "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw",
    "guest-set-time", "guest-set-user-password", "guest-set-vcpus",
    "guest-set-memory-blocks",
)


class PeerError(RuntimeError):
    """A peer process could not be started or did not come up."""


def qemu_ga_binary() -> str | None:
    """Path of qemu-ga (Debian: package qemu-guest-agent), or ``None``."""
    found = shutil.which("qemu-ga")
    if found is None and os.access("/usr/sbin/qemu-ga", os.X_OK):
        found = "/usr/sbin/qemu-ga"
    return found


def qemu_ga_argv(binary: str, path: Path, statedir: Path,
                 method: str = "unix-listen") -> list[str]:
    """The command line of a safe qemu-ga: its state, pid file and blocked commands.

    ``statedir`` is created if missing; the pid file goes there, not to /var/run.
    """
    statedir.mkdir(parents=True, exist_ok=True)
    return [binary, "-m", method, "-p", str(path), "-t", str(statedir),
            "-f", str(statedir / "qemu-ga.pid"), "--block-rpcs", ",".join(BLOCKED_RPCS)]


def wait_for_unix_socket(path: Path, proc: subprocess.Popen[Any], timeout: float = 15, *,
                         what: str | None = None,
                         sleep: Callable[[float], Any] = time.sleep) -> None:
    """Wait until something accepts connections on ``path``.

    Raises :class:`PeerError` (with the process's output) if ``proc`` exits first or
    nothing listens within ``timeout`` seconds.
    """
    name = what or str(proc.args[0] if isinstance(proc.args, list) else proc.args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else b""
            text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
            raise PeerError(f"{name} exited with code {proc.returncode}: {text.strip()}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return
                except OSError:
                    pass
        sleep(0.02)
    raise PeerError(f"{name} did not listen on {path} within {timeout:g} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it lingers; close its pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
