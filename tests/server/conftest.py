"""Helpers for the server tests: ``qproxy serve`` as a process, and a raw protocol client."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent import socket

from peers import stop_process, wait_for_unix_socket

ServeFactory = Callable[..., contextlib.AbstractContextManager[
    tuple[subprocess.Popen[bytes], Path]]]


@contextlib.contextmanager
def serve_process(workdir: Path, agent: Path, *extra: str,
                  name: str = "proxy.sock") -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``qproxy serve unix:AGENT --listen unix:WORKDIR/NAME`` until the block ends."""
    sock = workdir / name
    proc = subprocess.Popen([sys.executable, "-m", "qproxy", "serve", f"unix:{agent}",
                             "--listen", f"unix:{sock}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_unix_socket(sock, proc)
        yield proc, sock
    finally:
        stop_process(proc)


@pytest.fixture
def serve(workdir: Path) -> ServeFactory:
    """``with serve(agent_sock, *args) as (proc, proxy_sock): ...``"""
    def factory(agent: Path, *extra: str, name: str = "proxy.sock") -> Any:
        return serve_process(workdir, agent, *extra, name=name)
    return factory


class RawClient:
    """A client that speaks the agent protocol by hand over a (gevent) Unix socket."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        """One line, with a leading 0xFF if there was one."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection (buffered: {self.buf[:200]!r})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def read(self) -> dict[str, Any]:
        """The next message (a leading 0xFF is dropped)."""
        value: dict[str, Any] = json.loads(self.read_line().lstrip(b"\xff"))
        return value

    def read_eof(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        rest = self.buf
        self.buf = b""
        with gevent.Timeout(timeout):
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return rest
                rest += chunk

    def sync_delimited(self) -> None:
        """The qemu-ga-client dance: 0xFF + guest-sync-delimited, skip to 0xFF + the return."""
        sync_id = random.randint(1, 2**31 - 1)
        self.send(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                        "arguments": {"id": sync_id}}).encode() + b"\n")
        while True:
            line = self.read_line()
            ff = line.rfind(b"\xff")
            if ff < 0:
                continue  # the stray parse error, or anything from before
            if json.loads(line[ff + 1:]) == {"return": sync_id}:
                return

    def call(self, command: str, arguments: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
        request: dict[str, Any] = {"execute": command, **extra}
        if arguments is not None:
            request["arguments"] = arguments
        self.send(request)
        return self.read()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def raw() -> type[RawClient]:
    """The :class:`RawClient` class: ``with raw(path) as client: ...``."""
    return RawClient
