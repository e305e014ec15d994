"""The one small hierarchy of errors that qproxy raises.

Everything qproxy raises on purpose derives from :class:`QProxyError`, so a caller
can catch one class.  The subclasses say what went wrong in a way a program can act on:

* :class:`AgentError` -- the agent answered with ``{"error": ...}``; the call reached it.
* :class:`CallTimeout` -- no reply in time; the request may still run in the guest.
* :class:`ConnectionLost` -- the byte stream to the agent broke (or the agent reset);
  every pending call fails with it at once.
* :class:`ConnectFailed` -- the agent could not be reached or did not answer the handshake.
* :class:`ProtocolError` -- bytes on the wire that are not the protocol
  (:class:`MessageTooLarge` for an over-size message).
* :class:`InvalidURL` -- an agent address that qproxy cannot parse or has no transport for.
"""

from __future__ import annotations

from typing import Any


class QProxyError(Exception):
    """Base class of every error qproxy raises on purpose."""


class AgentError(QProxyError):
    """The agent replied with an error object.

    ``error_class`` is the agent's ``class`` (e.g. ``"CommandNotFound"``), ``desc`` its
    human-readable description and ``command`` the command that failed.
    """

    def __init__(self, error_class: str, desc: str, command: str | None = None,
                 error: dict[str, Any] | None = None) -> None:
        self.error_class = error_class
        self.desc = desc
        self.command = command
        self.error = error if error is not None else {"class": error_class, "desc": desc}
        super().__init__(f"{error_class}: {desc}")


class CallTimeout(QProxyError, TimeoutError):
    """No reply arrived within the call's timeout.

    The request may still be running in the guest; a late reply is dropped.
    """

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        super().__init__(f"no reply to {command!r} within {timeout:g} s "
                         "(the command may still run in the guest)")


class ConnectionLost(QProxyError, ConnectionError):
    """The byte stream to the agent broke, was closed, or the agent reset.

    Every call that was pending or queued fails with this error immediately.
    """


class AgentReset(ConnectionLost):
    """The agent announced a restart; calls in flight were cancelled."""


class ChannelClosed(ConnectionLost):
    """The agent connection was closed by this program."""


class ConnectFailed(ConnectionLost):
    """The agent could not be reached, or did not complete the handshake."""


class ProtocolError(QProxyError):
    """The peer sent bytes that are not the expected protocol."""


class MessageTooLarge(ProtocolError):
    """A message exceeded the configured maximum size and was discarded."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of at least {size} bytes exceeds the limit of {limit} bytes "
                         "(raise it with max_message_size)")


class InvalidURL(QProxyError, ValueError):
    """An agent address could not be parsed, or names no known transport."""


class TransportError(ConnectFailed):
    """A transport could not be opened or configured (device missing, busy, refused)."""
