"""Real peers for the tests: qemu-ga and the reference agent as processes.

Every helper here starts a process, waits until it answers, and stops it.  A peer that
cannot start makes the test fail loudly (never skip): a missing qemu-ga is a set-up
error that ``make test`` should have fixed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qproxy import testbed

#: Commands a qemu-ga on the test machine must never run (it runs as root here).
BLOCKED_RPCS = ",".join(testbed.BLOCKED_RPCS)


def qemu_ga_binary() -> str:
    """Path of qemu-ga; fails the test if it is not installed."""
    path = testbed.qemu_ga_binary()
    if path is None:
        pytest.fail("qemu-ga is not installed (Debian package qemu-guest-agent); "
                    "'make test' installs it when run as root", pytrace=False)
    return path


def wait_for_unix_socket(path: Path, proc: subprocess.Popen[bytes],
                         timeout: float = 10) -> None:
    """Wait until something accepts connections on ``path``; fail if ``proc`` dies."""
    try:
        testbed.wait_for_unix_socket(path, proc, timeout)
    except testbed.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


stop_process = testbed.stop_process


@contextlib.contextmanager
def qemu_ga(workdir: Path, method: str = "unix-listen", path: Path | None = None,
            wait: bool = True) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run a real qemu-ga (``-m method -p path``) with dangerous commands blocked."""
    sock = path or (workdir / "qga.sock")
    proc = subprocess.Popen(
        testbed.qemu_ga_argv(qemu_ga_binary(), sock, workdir / "qga-state", method),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if wait and method == "unix-listen":
            wait_for_unix_socket(sock, proc)
        yield proc, sock
    finally:
        stop_process(proc)


@contextlib.contextmanager
def reference_agent(workdir: Path, *extra_args: str,
                    name: str = "ref.sock") -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``qproxy agent`` as its own process on a Unix socket."""
    sock = workdir / name
    proc = subprocess.Popen([sys.executable, "-m", "qproxy", "agent", "--listen", f"unix:{sock}",
                             *extra_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_unix_socket(sock, proc)
        yield proc, sock
    finally:
        stop_process(proc)
