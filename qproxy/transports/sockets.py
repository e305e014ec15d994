"""Stream sockets: ``unix:PATH`` and ``tcp:HOST:PORT``.

``unix:`` is how QEMU exposes a guest agent on the host
(``-chardev socket,path=PATH,server=on``) and how ``qemu-ga -m unix-listen`` listens.
Options: ``?connect_timeout=SECONDS`` (default 10).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from gevent import Timeout

from ..errors import InvalidURL, TransportError
from .base import FdTransport, float_option, reject_unknown

_OPTIONS = ("connect_timeout",)


class _SocketTransport(FdTransport):
    def __init__(self, url: str, family: int, address: Any, connect_timeout: float) -> None:
        super().__init__(url)
        self.family = family
        self.address = address
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            err = sock.connect_ex(self.address)
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self._attach(sock.fileno())
                self._sock = sock
                with Timeout(self.connect_timeout, TransportError(
                        f"{self.url}: connect timed out after {self.connect_timeout:g} s")):
                    self._wait(self._wwatch)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise TransportError(f"{self.url}: cannot connect: {os.strerror(err)}"
                                     + _hint(self.family, err))
        except BaseException:
            if self._sock is not None:
                self.close()
            else:
                sock.close()
            raise
        if self._sock is None:
            self._sock = sock
            self._attach(sock.fileno())

    def _recv(self, size: int) -> bytes:
        assert self._sock is not None
        return self._sock.recv(size)

    def _send(self, data: bytes | memoryview) -> int:
        assert self._sock is not None
        return self._sock.send(data)

    def _detach(self) -> Callable[[], None]:
        sock, self._sock = self._sock, None
        return sock.close if sock is not None else _nothing


def _nothing() -> None:
    pass


def _hint(family: int, err: int) -> str:
    if family == socket.AF_UNIX and err == errno.ENOENT:
        return " (no such socket: is the agent or QEMU running, and is the path right?)"
    if err == errno.ECONNREFUSED:
        return " (nothing listens there)"
    if err == errno.EACCES:
        return " (permission denied: run as a user that may open the socket)"
    return ""


class UnixTransport(_SocketTransport):
    """A Unix stream socket: ``unix:/run/qga.sock`` (``unix:///run/qga.sock`` too)."""

    schemes = ("unix",)

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> UnixTransport:
        url = f"{scheme}:{rest}"
        reject_unknown(options, _OPTIONS, url)
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise InvalidURL(f"{url}: a Unix socket URL needs a path, e.g. unix:/run/qga.sock")
        return cls(url, socket.AF_UNIX, path, float_option(options, "connect_timeout", 10.0))


class TCPTransport(_SocketTransport):
    """A TCP connection: ``tcp:127.0.0.1:4444`` or ``tcp:[::1]:4444``."""

    schemes = ("tcp",)

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> TCPTransport:
        url = f"{scheme}:{rest}"
        reject_unknown(options, _OPTIONS, url)
        host, port = parse_host_port(rest, url)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return cls(url, family, (host, port), float_option(options, "connect_timeout", 10.0))


def parse_host_port(rest: str, url: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[V6]:PORT`` (a leading ``//`` is allowed)."""
    text = rest[2:] if rest.startswith("//") else rest
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise InvalidURL(f"{url}: expected HOST:PORT, e.g. tcp:127.0.0.1:4444")
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidURL(f"{url}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise InvalidURL(f"{url}: port {port} is out of range 1-65535")
    return host, port
