"""The transport interface: a cooperative byte stream to one agent.

A transport knows bytes only.  It is created unopened from a URL by the registry
(:mod:`qproxy.transports.registry`), opened by the channel, then read by exactly one
reader greenlet and written by at most one writer at a time.  All waiting is done on
gevent's hub through fd watchers, so nothing here monkey-patches or blocks the hub.
"""

from __future__ import annotations

import errno
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gevent
from gevent.hub import get_hub

from ..errors import ConnectionLost, InvalidURL

log = logging.getLogger("qproxy.transports")

#: How much one ``read()`` returns at most (reads are coalesced up to this size).
READ_LIMIT = 1 << 20
_CHUNK = 64 * 1024  # below glibc's mmap threshold: a bigger buffer costs an mmap per read


class Transport(ABC):
    """A byte stream to an agent.

    Subclasses set :attr:`schemes` and implement :meth:`from_url`, :meth:`open`,
    :meth:`read`, :meth:`write_nowait`, :meth:`write`, :meth:`close` and :meth:`fileno`.
    """

    #: URL schemes this transport serves, e.g. ``("unix",)``.
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    @abstractmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> Transport:
        """Build an unopened transport from a parsed URL (``scheme:rest?options``)."""

    @abstractmethod
    def open(self) -> None:
        """Open the stream; may wait cooperatively.  Raises :class:`TransportError`."""

    @abstractmethod
    def read(self) -> bytes:
        """Wait cooperatively for data; return what is available (``b""`` at end of stream)."""

    @abstractmethod
    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what can be written without waiting; return the number of bytes written."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Write all of ``data``, waiting cooperatively as needed."""

    @abstractmethod
    def close(self) -> None:
        """Close the stream; a greenlet blocked in read/write gets :class:`ConnectionLost`."""

    @abstractmethod
    def fileno(self) -> int:
        """The file descriptor, for diagnostics and watchers."""

    def start_reading(self, on_data: Callable[[bytes], None],
                      on_end: Callable[[str], None]) -> None:
        """Hand incoming bytes to ``on_data`` as they arrive, until the stream ends.

        ``on_end(reason)`` is called once when it ends (end of stream or an error; also
        after :meth:`close`).  The callbacks may run in gevent's hub, so they must not
        block.  This default runs a greenlet around :meth:`read`; :class:`FdTransport`
        reads from its fd watcher's callback instead, which saves two greenlet switches
        per read.
        """
        def loop() -> None:
            try:
                while True:
                    data = self.read()
                    if not data:
                        on_end("the peer closed the connection")
                        return
                    on_data(data)
            except ConnectionLost as exc:
                on_end(str(exc))

        gevent.spawn(loop)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def int_option(options: Mapping[str, str], name: str, default: int) -> int:
    """Read an integer URL option, with an error that names the option."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidURL(f"option {name}={raw!r} must be an integer") from None


def float_option(options: Mapping[str, str], name: str, default: float) -> float:
    """Read a number URL option, with an error that names the option."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidURL(f"option {name}={raw!r} must be a number") from None


def bool_option(options: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean URL option (1/0, true/false, yes/no, on/off)."""
    raw = options.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidURL(f"option {name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")


def reject_unknown(options: Mapping[str, str], known: tuple[str, ...], url: str) -> None:
    """Raise :class:`InvalidURL` if ``options`` holds a name not in ``known``."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise InvalidURL(f"{url}: unknown option(s) {', '.join(unknown)} (allowed: {allowed})")


class FdTransport(Transport):
    """Shared machinery for transports over one non-blocking file descriptor.

    Subclasses provide :meth:`_recv` and :meth:`_send`, which must raise
    :class:`BlockingIOError` when they would block, and set ``self._fd`` in ``open()``
    then call :meth:`_attach`.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._fd = -1
        self._hub: Any = None
        self._rwatch: Any = None
        self._wwatch: Any = None
        self._closed = True
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[str], None] | None = None

    # -- primitives for subclasses -------------------------------------------------
    @abstractmethod
    def _recv(self, size: int) -> bytes:
        """One non-blocking read; raise BlockingIOError if nothing is there."""

    @abstractmethod
    def _send(self, data: bytes | memoryview) -> int:
        """One non-blocking write; raise BlockingIOError if nothing fits."""

    def _release(self) -> None:
        """Close the underlying object (called once, soon after :meth:`close`)."""

    def _detach(self) -> Callable[[], None]:
        """Hand over the underlying object's closer and forget the object.

        :meth:`close` wakes blocked greenlets first and closes the fd on the next
        turn of the loop (as gevent's own sockets do), so a transport that may be
        opened again must return a closer bound to the *old* object.  The default
        returns :meth:`_release`.
        """
        return self._release

    def _attach(self, fd: int) -> None:
        self._fd = fd
        self._hub = get_hub()
        self._rwatch = self._hub.loop.io(fd, 1)
        self._wwatch = self._hub.loop.io(fd, 2)
        self._closed = False

    def _wait(self, watcher: Any) -> None:
        if self._closed:
            raise ConnectionLost(f"{self.url}: transport is closed")
        self._hub.wait(watcher)

    # -- Transport API -------------------------------------------------------------
    def fileno(self) -> int:
        return self._fd

    def _read_available(self) -> bytes | None:
        """What can be read now, coalesced; ``None`` if nothing, ``b""`` at the end."""
        try:
            data = self._recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty whose other side is gone
                return b""
            raise ConnectionLost(f"{self.url}: read failed: {exc.strerror or exc}") from exc
        if len(data) < _CHUNK:
            return data
        # Coalesce: drain what is already there so big replies arrive in big pieces.
        parts = [data]
        total = len(data)
        while total < READ_LIMIT:
            try:
                more = self._recv(_CHUNK)
            except OSError:
                break  # would block, or an error the next read reports
            if not more:
                break
            parts.append(more)
            total += len(more)
            if len(more) < _CHUNK:
                break
        return b"".join(parts)

    def read(self) -> bytes:
        while True:
            if self._closed:
                raise ConnectionLost(f"{self.url}: transport is closed")
            data = self._read_available()
            if data is not None:
                return data
            self._wait(self._rwatch)

    def start_reading(self, on_data: Callable[[bytes], None],
                      on_end: Callable[[str], None]) -> None:
        if self._closed:
            raise ConnectionLost(f"{self.url}: transport is closed")
        self._on_data = on_data
        self._on_end = on_end
        self._rwatch.start(self._readable)

    def _readable(self) -> None:
        """The read watcher's callback; runs in the hub."""
        try:
            data = self._read_available()
        except ConnectionLost as exc:
            self._end_reading(str(exc))
            return
        if data is None:
            return
        if not data:
            self._end_reading("the peer closed the connection")
            return
        on_data = self._on_data
        if on_data is None:
            return
        try:
            on_data(data)
        except Exception:
            log.exception("%s: the consumer of incoming data failed", self.url)
            self._end_reading("internal error while handling incoming data")

    def _end_reading(self, reason: str) -> None:
        if self._rwatch is not None:
            self._rwatch.stop()
        on_end, self._on_end, self._on_data = self._on_end, None, None
        if on_end is not None:
            on_end(reason)

    def write_nowait(self, data: bytes | memoryview) -> int:
        if self._closed:
            raise ConnectionLost(f"{self.url}: transport is closed")
        try:
            return self._send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ConnectionLost(f"{self.url}: write failed: {exc.strerror or exc}") from exc

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            sent = self.write_nowait(view)
            if sent:
                view = view[sent:]
            else:
                self._wait(self._wwatch)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        exc = ConnectionLost(f"{self.url}: transport closed")
        if self._on_end is not None:
            self._end_reading("the transport was closed")
        watchers = [self._rwatch, self._wwatch]
        self._rwatch = self._wwatch = None
        self._fd = -1
        self._hub.cancel_waits_close_and_then(watchers, exc, self._detach())
