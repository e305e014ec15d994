"""Listening sockets for the server: ``unix:PATH`` and ``tcp:[HOST:]PORT``.

* A Unix socket is created with a given mode (0600 by default) — the umask is narrowed
  around ``bind()`` so that it is never reachable with wider permissions, even briefly.
  A socket file left behind by a dead server is replaced; one that something still
  listens on is refused with a clear error; any other kind of file is never touched.
  The file is removed on :meth:`Listener.close` (only if it is still ours).
* TCP listens on loopback unless an address is given (``tcp:4444`` and ``tcp::4444``
  mean ``127.0.0.1:4444``); port 0 picks a free port (see :attr:`Listener.url`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any

from gevent import socket

from ..errors import InvalidURL, QProxyError
from ..transports.registry import split_url

DEFAULT_MODE = 0o600
BACKLOG = 128


class ListenError(QProxyError):
    """A listening socket could not be created (address in use, permissions, ...)."""


class Listener:
    """One bound, listening socket; :attr:`url` says where it actually listens."""

    def __init__(self, sock: socket.socket, url: str, path: str | None = None) -> None:
        self.socket = sock
        self.url = url
        self.path = path
        self._inode: tuple[int, int] | None = None
        if path is not None:
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)

    def close(self) -> None:
        """Close the socket and remove the socket file if it is still the one we made."""
        with contextlib.suppress(OSError):
            self.socket.close()
        if self.path is None or self._inode is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._inode = None

    def __repr__(self) -> str:
        return f"<Listener {self.url}>"


def parse_listen_url(url: str) -> tuple[int, Any]:
    """``(family, address)`` for a listen URL; raises :class:`InvalidURL`."""
    scheme, rest, options = split_url(url)
    unknown = sorted(set(options) - {"allow", "deny"})
    if unknown:
        raise InvalidURL(f"{url}: unknown listen option(s) {', '.join(unknown)} "
                         "(allowed: allow, deny)")
    if scheme == "unix":
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise InvalidURL(f"{url}: a Unix socket URL needs a path, e.g. unix:/run/qproxy.sock")
        if len(os.fsencode(path)) > 107:
            raise InvalidURL(f"{url}: the path is too long for a Unix socket (max 107 bytes)")
        return socket.AF_UNIX, path
    if scheme == "tcp":
        text = rest[2:] if rest.startswith("//") else rest
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise InvalidURL(f"{url}: expected tcp:[ADDRESS]:PORT")
        else:
            host, _, port_text = text.rpartition(":")
        host = host or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            raise InvalidURL(f"{url}: expected tcp:PORT or tcp:HOST:PORT, "
                             "e.g. tcp:127.0.0.1:4444") from None
        if not 0 <= port < 65536:
            raise InvalidURL(f"{url}: port {port} is out of range 0-65535")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, port)
    raise InvalidURL(f"{url}: the server listens on unix:PATH or tcp:[HOST:]PORT, "
                     f"not {scheme}:")


def bind(url: str, mode: int = DEFAULT_MODE) -> Listener:
    """Bind and listen on ``url``; raises :class:`ListenError` or :class:`InvalidURL`."""
    family, address = parse_listen_url(url)
    if family == socket.AF_UNIX:
        return _bind_unix(address, mode)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        hint = " (another program listens there)" if exc.errno == errno.EADDRINUSE else ""
        raise ListenError(f"cannot listen on {url}: {exc.strerror or exc}{hint}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return Listener(sock, f"tcp:{shown}:{port}")


def _bind_unix(path: str, mode: int) -> Listener:
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (the file appeared meanwhile: is another server starting?)"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = " (permission denied: choose a directory you may write to)"
        elif exc.errno == errno.ENOENT:
            hint = " (the directory does not exist)"
        raise ListenError(f"cannot listen on unix:{path}: {exc.strerror or exc}{hint}") from None
    finally:
        os.umask(old_umask)
    try:
        os.chmod(path, mode)
        sock.listen(BACKLOG)
        return Listener(sock, f"unix:{path}", path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ListenError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live one or any other file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot listen on unix:{path}: the path exists and is not a socket "
                          "(refusing to replace it)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: the server that made it is gone
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.EAGAIN:  # a full backlog: somebody is very much alive
            raise ListenError(f"cannot listen on unix:{path}: another program is listening "
                              "on this socket (stop it, or choose another path)") from None
        raise ListenError(f"cannot listen on unix:{path}: the existing socket cannot be "
                          f"checked: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ListenError(f"cannot listen on unix:{path}: another program is listening on this "
                      "socket (another qproxy serve?); stop it, or choose another path")
