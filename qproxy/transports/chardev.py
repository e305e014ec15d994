"""Plain character devices: ``chardev:PATH``.

For devices that pyserial cannot (or need not) configure: a virtio-serial port inside a
guest (``chardev:/dev/virtio-ports/org.qemu.guest_agent.0``), a host-side pty from
QEMU's ``-chardev pty`` (``chardev:/dev/pts/3``), or any other character device that
carries the agent's byte stream.  The device is opened non-blocking and driven by gevent
io watchers (:class:`~qproxy.transports.base.FdTransport`); a terminal is set raw.

Option: ``exclusive`` (default 1) takes an advisory ``flock`` so a second qproxy on the
same device fails at once with a "busy" error (virtio ports also refuse a second open
themselves, with EBUSY).

End of stream, and why it is not an error here:

* a pty whose other side closed fails reads with EIO (and poll reports HUP for ever);
* a virtio-serial port whose host side is not connected reads 0 bytes (and poll reports
  HUP for ever; data written meanwhile is lost).

Both are "the peer is absent": :meth:`read` returns ``b""`` once, the channel fails the
pending calls, closes the device and opens it again with capped exponential backoff.
The descriptor is never watched again after that, so nothing spins on HUP.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import stat
import termios
import tty
from collections.abc import Callable, Mapping

from ..errors import InvalidURL, TransportError
from .base import FdTransport, bool_option, reject_unknown

log = logging.getLogger(__name__)

_OPTIONS = ("exclusive",)


def _open_error(url: str, path: str, exc: OSError) -> TransportError:
    code = exc.errno
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISSOCK(mode):
        return TransportError(f"{url}: {path} is a Unix socket; use unix:{path}")
    if stat.S_ISDIR(mode):
        return TransportError(f"{url}: {path} is a directory, not a character device")
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        why = (f"{path} is busy: another program has it open (another qproxy, or qemu-ga "
               "itself on a virtio port?)")
    elif code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        why = f"no such device {path} (is the port configured, the device plugged in?)"
    elif code in (errno.EACCES, errno.EPERM):
        why = f"permission denied opening {path} (run as root or as the device's group)"
    else:
        why = f"cannot open {path}: {exc.strerror or exc}"
    return TransportError(f"{url}: {why}")


class CharDevTransport(FdTransport):
    """A character device opened as it is: ``chardev:/dev/virtio-ports/NAME``."""

    schemes = ("chardev",)

    def __init__(self, url: str, path: str, exclusive: bool = True) -> None:
        super().__init__(url)
        self.path = path
        self.exclusive = exclusive
        self._devfd = -1

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> CharDevTransport:
        url = f"{scheme}:{rest}"
        reject_unknown(options, _OPTIONS, url)
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise InvalidURL(f"{url}: a chardev URL needs a device path, "
                             "e.g. chardev:/dev/virtio-ports/org.qemu.guest_agent.0")
        return cls(url, path, bool_option(options, "exclusive", True))

    def open(self) -> None:
        """Open the device non-blocking; lock it; set a terminal raw and flush its input."""
        if not self._closed:
            raise TransportError(f"{self.url}: already open")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_error(self.url, self.path, exc) from None
        try:
            self._prepare(fd)
        except OSError as exc:
            os.close(fd)
            raise _open_error(self.url, self.path, exc) from None
        except termios.error as exc:
            os.close(fd)
            raise TransportError(f"{self.url}: cannot set {self.path} raw: {exc}") from None
        except TransportError:
            os.close(fd)
            raise
        self._devfd = fd
        self._attach(fd)
        log.debug("%s: opened as fd %d", self.url, fd)

    def _prepare(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISCHR(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a character device"
            hint = " (for a Unix socket use unix:PATH)" if stat.S_ISSOCK(mode) else ""
            raise TransportError(f"{self.url}: {self.path} is {kind}{hint}")
        if self.exclusive:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.isatty(fd):
            # A pty starts in canonical mode with echo: make it a clean byte pipe.
            # setraw gives VMIN=1/VTIME=0, so an empty non-blocking read is EAGAIN.
            tty.setraw(fd, termios.TCSANOW)
            termios.tcflush(fd, termios.TCIFLUSH)

    def _recv(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def _send(self, data: bytes | memoryview) -> int:
        return os.write(self._fd, data)

    def _detach(self) -> Callable[[], None]:
        fd, self._devfd = self._devfd, -1
        return functools.partial(_close_fd, fd) if fd >= 0 else _nothing


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        log.debug("closing fd %d: %s", fd, exc)


def _nothing() -> None:
    pass
