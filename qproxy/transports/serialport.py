"""Serial lines: ``serial:DEVICE`` and pyserial's ``rfc2217://``, ``socket://``, ``loop://``.

``serial:/dev/ttyUSB0?baud=115200`` opens a local tty with pyserial, which sets the
line up (speed, framing, flow control, raw mode, an exclusive advisory lock, input
flushed).  After that qproxy does its own non-blocking ``os.read``/``os.write`` on the
descriptor and waits on gevent io watchers (:class:`FdTransport`): pyserial's
``read()`` with any timeout but 0 sits in ``select`` and would block the whole hub.

pyserial URLs:

* ``socket://HOST:PORT`` is a raw TCP byte stream; qproxy serves it with its own
  cooperative TCP transport (an fd, no threads), exactly like ``tcp:HOST:PORT``.
* ``rfc2217://HOST:PORT`` (a console/terminal server speaking Telnet COM-port control)
  and ``loop://`` (an in-memory loop-back, for tests) have **no file descriptor**:
  pyserial implements them with its own reader thread and ``queue.Queue``.  Their
  blocking calls (``open``, ``read``, ``write``, ``close``) therefore run in a small
  gevent :class:`~gevent.threadpool.ThreadPool` owned by the transport, so the hub never
  blocks.  The cost is a thread hop per read and write (tens of microseconds).

Options (``serial:`` and ``rfc2217://``): ``baud`` (default 115200), ``bytesize``
(5-8, default 8), ``parity`` (N, E, O, M, S), ``stopbits`` (1, 1.5, 2), ``rtscts``,
``xonxoff`` (default 0) and, for ``serial:`` only, ``exclusive`` (default 1).
``rfc2217://`` also takes pyserial's ``timeout`` (network negotiation, seconds),
``ign_set_control`` and ``poll_modem``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import termios
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import gevent
import serial
from gevent.event import Event
from gevent.threadpool import ThreadPool

from ..errors import ConnectionLost, InvalidURL, TransportError
from .base import READ_LIMIT, FdTransport, Transport, bool_option, int_option, reject_unknown
from .sockets import TCPTransport, parse_host_port

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_LINE_OPTIONS = ("baud", "bytesize", "parity", "stopbits", "rtscts", "xonxoff")
_SERIAL_OPTIONS = (*_LINE_OPTIONS, "exclusive")
_RFC2217_OPTIONS = (*_LINE_OPTIONS, "timeout", "ign_set_control", "poll_modem")
_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
             "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE,
             "2": serial.STOPBITS_TWO}
#: How long one threaded read waits before it looks again (bounds a stuck worker).
_THREAD_READ_TIMEOUT = 0.5


def line_settings(options: Mapping[str, str], url: str) -> dict[str, Any]:
    """pyserial keyword arguments for the line options in ``options``, validated."""
    baud = int_option(options, "baud", 115200)
    if baud <= 0:
        raise InvalidURL(f"{url}: baud={baud} must be a positive number of bits per second")
    bytesize = int_option(options, "bytesize", 8)
    if bytesize not in (5, 6, 7, 8):
        raise InvalidURL(f"{url}: bytesize={bytesize} must be 5, 6, 7 or 8")
    parity = options.get("parity", "N").upper()
    if parity not in _PARITIES:
        raise InvalidURL(f"{url}: parity={options['parity']!r} must be one of N, E, O, M, S")
    stopbits = options.get("stopbits", "1")
    if stopbits not in _STOPBITS:
        raise InvalidURL(f"{url}: stopbits={stopbits!r} must be 1, 1.5 or 2")
    return {"baudrate": baud, "bytesize": bytesize, "parity": _PARITIES[parity],
            "stopbits": _STOPBITS[stopbits], "rtscts": bool_option(options, "rtscts", False),
            "xonxoff": bool_option(options, "xonxoff", False)}


def describe_open_error(url: str, device: str, exc: BaseException) -> TransportError:
    """Turn an open/configure failure into an error that names the device and a fix."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        why = (f"{device} is busy: another program holds it open exclusively "
               "(another qproxy, a serial console, ModemManager?)")
    elif code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        why = f"no such device {device} (unplugged, or the wrong path?)"
    elif code in (errno.EACCES, errno.EPERM):
        why = (f"permission denied opening {device} (run as root or join the group that "
               "owns it, usually 'dialout')")
    elif "configure port" in text or code == errno.ENOTTY:
        why = (f"{device} is not a terminal that can be configured; for a virtio-serial "
               f"port or another plain character device use chardev:{device}")
    else:
        why = f"cannot open {device}: {getattr(exc, 'strerror', None) or text}"
    return TransportError(f"{url}: {why}")


class SerialTransport(FdTransport):
    """A local serial line (``serial:/dev/ttyS0?baud=9600``), configured by pyserial.

    ``from_url`` also serves pyserial's URL schemes (``rfc2217``, ``socket``, ``loop``),
    returning the transport that suits each (see the module documentation).
    """

    schemes = ("serial", "rfc2217", "socket", "loop")

    def __init__(self, url: str, device: str, settings: Mapping[str, Any],
                 exclusive: bool = True) -> None:
        super().__init__(url)
        self.device = device
        self.settings = dict(settings)
        self.exclusive = exclusive
        self._port: serial.Serial | None = None

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> Transport:
        url = f"{scheme}:{rest}"
        if scheme == "socket":
            return TCPTransport.from_url(scheme, rest, options)
        if scheme == "loop":
            reject_unknown(options, (), url)
            if rest not in ("", "//"):
                raise InvalidURL(f"{url}: a loop-back URL takes no address; use loop://")
            return ThreadedSerialTransport("loop://", "loop://", {})
        if scheme == "rfc2217":
            reject_unknown(options, _RFC2217_OPTIONS, url)
            if not rest.startswith("//"):
                raise InvalidURL(f"{url}: expected rfc2217://HOST:PORT")
            parse_host_port(rest, url)
            extra = [f"{name}={options[name]}" for name in _RFC2217_OPTIONS[len(_LINE_OPTIONS):]
                     if name in options]
            target = f"rfc2217:{rest}" + ("?" + "&".join(extra) if extra else "")
            return ThreadedSerialTransport(url, target, line_settings(options, url))
        if scheme != "serial":
            raise InvalidURL(f"{url}: {scheme!r} is not a serial scheme")
        reject_unknown(options, _SERIAL_OPTIONS, url)
        device = rest[2:] if rest.startswith("//") else rest
        if not device:
            raise InvalidURL(f"{url}: a serial URL needs a device, e.g. serial:/dev/ttyS0")
        return cls(url, device, line_settings(options, url),
                   bool_option(options, "exclusive", True))

    def open(self) -> None:
        """Open and configure the device (raw, exclusive, input flushed)."""
        if not self._closed:
            raise TransportError(f"{self.url}: already open")
        port = serial.Serial(timeout=0, write_timeout=0, exclusive=self.exclusive,
                             **self.settings)
        port.port = self.device
        try:
            # O_NONBLOCK open, termios and flock: quick, so done on the hub.
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise describe_open_error(self.url, self.device, exc) from None
        try:
            fd = port.fileno()
            _finish_raw(fd)
            termios.tcflush(fd, termios.TCIFLUSH)  # drop what arrived before us
        except (termios.error, OSError) as exc:
            port.close()
            raise describe_open_error(self.url, self.device, exc) from None
        self._port = port
        self._attach(fd)
        log.debug("%s: opened %s as fd %d", self.url, self.device, fd)

    def _recv(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def _send(self, data: bytes | memoryview) -> int:
        return os.write(self._fd, data)

    def _detach(self) -> Callable[[], None]:
        port, self._port = self._port, None
        return functools.partial(_close_port, port)


def _close_port(port: Any) -> None:
    if port is not None:
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("error closing %s: %s", port.port, exc)


def _finish_raw(fd: int) -> None:
    """Make reads on a pyserial-configured tty return EAGAIN, not 0, when empty.

    pyserial leaves VMIN=0/VTIME=0, under which an empty non-blocking read returns 0 --
    indistinguishable from a hang-up.  VMIN=1/VTIME=0 makes it EAGAIN, so a 0-byte read
    means end of stream.  Also clear BRKINT and PARMRK (pyserial keeps them).
    """
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.BRKINT | termios.PARMRK | termios.ISTRIP)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class ThreadedSerialTransport(Transport):
    """A pyserial URL with no file descriptor (``rfc2217://``, ``loop://``).

    Every blocking pyserial call runs in a gevent thread pool of its own (up to three
    threads: one reading, one writing, one closing; idle threads exit), and greenlets
    wait for the result cooperatively.  :meth:`close` wakes a greenlet blocked in
    :meth:`read` or :meth:`write` with :class:`ConnectionLost` at once.
    """

    schemes = ("rfc2217", "loop")

    def __init__(self, url: str, target: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url)
        self.target = target
        self.settings = dict(settings)
        self._port: Any = None
        self._pool: ThreadPool | None = None
        self._closed_event = Event()
        self._closed_event.set()

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> Transport:
        return SerialTransport.from_url(scheme, rest, options)

    def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run ``func`` in the pool; raise ConnectionLost if closed meanwhile."""
        if self._closed_event.is_set() or self._pool is None:
            raise ConnectionLost(f"{self.url}: transport is closed")
        result = self._pool.spawn(_guarded, func, *args)
        gevent.wait([result, self._closed_event], count=1)
        if not result.ready():
            raise ConnectionLost(f"{self.url}: transport closed")
        value, error = result.get()
        if error is not None:
            raise error
        return cast(_T, value)

    def open(self) -> None:
        """Connect (rfc2217: Telnet negotiation; may take seconds) in the pool."""
        if not self._closed_event.is_set():
            raise TransportError(f"{self.url}: already open")
        port = serial.serial_for_url(self.target, do_not_open=True,
                                     timeout=_THREAD_READ_TIMEOUT, **self.settings)
        pool = ThreadPool(3, idle_task_timeout=5)
        self._pool = pool
        self._closed_event.clear()
        try:
            self._run(port.open)
        except ConnectionLost:
            pool.spawn(_quiet_close, port)
            raise
        except (serial.SerialException, OSError, ValueError) as exc:
            self._closed_event.set()
            self._pool = None
            pool.spawn(_quiet_close, port)
            raise TransportError(f"{self.url}: {exc}") from None
        self._port = port
        log.debug("%s: opened through a thread pool", self.url)

    def read(self) -> bytes:
        """Wait (in a pool thread) for data; ``b""`` when the far end went away."""
        port = self._port
        while True:
            try:
                data = self._run(_blocking_read, port)
            except serial.SerialException as exc:
                log.debug("%s: read ended: %s", self.url, exc)
                return b""
            if data:
                return data
            # Nothing within _THREAD_READ_TIMEOUT: ask again (no hub spin; a thread waits).

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Nothing can be written without waiting here; callers fall back to write()."""
        if self._closed_event.is_set():
            raise ConnectionLost(f"{self.url}: transport is closed")
        return 0

    def write(self, data: bytes | memoryview) -> None:
        """Write everything (in a pool thread)."""
        port = self._port
        if port is None:
            raise ConnectionLost(f"{self.url}: transport is closed")
        try:
            self._run(port.write, bytes(data))
        except serial.SerialException as exc:
            raise ConnectionLost(f"{self.url}: write failed: {exc}") from exc

    def close(self) -> None:
        """Wake waiting greenlets at once; pyserial's slow close runs in the pool."""
        if self._closed_event.is_set():
            return
        self._closed_event.set()
        port, self._port = self._port, None
        pool, self._pool = self._pool, None
        if port is not None and pool is not None:
            pool.spawn(_quiet_close, port)

    def fileno(self) -> int:
        """There is no file descriptor: -1."""
        return -1


def _guarded(func: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
    """Runs in a pool thread: return the error instead of raising it.

    gevent's pool would print a traceback for an exception that is an ordinary outcome
    here (the far end closed, a refused connection); the greenlet re-raises it.
    """
    try:
        return func(*args), None
    except Exception as exc:
        return None, exc


def _blocking_read(port: Any) -> bytes:
    """Runs in a pool thread: wait up to the port's timeout for a byte, then drain."""
    data: bytes = port.read(1)
    if data:
        waiting = port.in_waiting
        if waiting:
            data += port.read(min(waiting, READ_LIMIT))
    return data


def _quiet_close(port: Any) -> None:
    try:
        port.close()
    except Exception as exc:  # runs in a pool thread; nobody to report to but the log
        log.debug("closing %s: %s", getattr(port, "port", port), exc)
