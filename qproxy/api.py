"""The synchronous API: ``agent = qproxy.connect(url); agent.call("guest-ping")``.

Calls block only the calling greenlet.  From a plain script (no gevent knowledge
needed) ``call()`` simply blocks; from many greenlets at once the calls share one
connection and run concurrently.
"""

from __future__ import annotations

import logging
import random
from types import TracebackType
from typing import Any, Final

import gevent
from gevent import getcurrent
from gevent.event import AsyncResult
from gevent.hub import Waiter, get_hub

from .core.channel import Call, Channel, State
from .core.commands import NO_SUCCESS_RESPONSE
from .core.decoder import DEFAULT_MAX_SIZE
from .errors import AgentError, CallTimeout, ConnectionLost
from .transports import Transport

log = logging.getLogger("qproxy.api")

#: Default seconds a call waits for its reply.
DEFAULT_TIMEOUT: Final = 30.0


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: Pass as ``timeout`` to use the agent's ``default_timeout``.
DEFAULT: Final = _Default()


def unwrap_reply(reply: dict[str, Any], command: str) -> Any:
    """The ``return`` value of a reply, or raise :class:`AgentError` for an error reply."""
    if "return" in reply:
        return reply["return"]
    error = reply.get("error")
    if isinstance(error, dict):
        raise AgentError(str(error.get("class", "GenericError")), str(error.get("desc", "")),
                         command, error)
    raise AgentError("GenericError", f"malformed reply: {reply!r:.200}", command)


class Agent:
    """A connection to one guest agent, shared by every greenlet that uses it.

    Create it with :func:`connect`.  Use it as a context manager, or call
    :meth:`close` when done.
    """

    def __init__(self, channel: Channel, default_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self.default_timeout = default_timeout
        #: Commands that answer nothing on success; :meth:`info` adds what the agent lists.
        self.no_reply: set[str] = set(NO_SUCCESS_RESPONSE)

    @property
    def url(self) -> str:
        """The agent's URL."""
        return self.channel.url

    @property
    def connected(self) -> bool:
        """True while the agent is connected and synchronised."""
        return self.channel.state is State.READY

    def call(self, command: str, arguments: dict[str, Any] | None = None,
             timeout: float | _Default | None = DEFAULT) -> Any:
        """Run ``command`` and return its ``return`` value.

        Blocks the calling greenlet only.  ``timeout`` is in seconds (``None`` waits for
        ever; by default ``default_timeout``).  Commands that answer nothing on success
        (``guest-shutdown``, ``guest-suspend-*``, and any that :meth:`info` reports with
        ``success-response: false``) return ``None`` once the agent has answered a
        ``guest-sync`` sent after them, or the connection closed.

        Raises :class:`~qproxy.errors.AgentError` if the agent answers with an error,
        :class:`~qproxy.errors.CallTimeout` if no reply comes in time, and
        :class:`~qproxy.errors.ConnectionLost` if the connection breaks first.
        """
        limit = self.default_timeout if isinstance(timeout, _Default) else timeout
        if command in self.no_reply:
            return self._call_without_reply(command, arguments, limit)
        wake = _Wakeup()
        pending = self.channel.submit_command(command, arguments, wake)
        if not pending.ready():
            timer = None
            if limit is not None:
                timer = wake.hub.loop.timer(limit)
                timer.start(wake, None)
            try:
                woke = wake.wait()
            except BaseException:
                # Killed, or an outer gevent.Timeout: nobody will take the reply.
                wake.done = True
                self.channel.abandon(pending, timed_out=False)
                raise
            finally:
                if timer is not None:
                    timer.close()
            if woke is None and not pending.ready():
                self.channel.abandon(pending)
                raise CallTimeout(command, limit if limit is not None else 0.0)
        return unwrap_reply(pending.get(block=False), command)

    def _call_without_reply(self, command: str, arguments: dict[str, Any] | None,
                            limit: float | None) -> None:
        """A command that answers nothing on success (``guest-shutdown``, suspend).

        A ``guest-sync`` probe follows it; the agent runs commands in order, so the
        probe's answer (with no error for the command before it) means it succeeded.
        If the connection drops first, the guest went down as asked.
        """
        channel = self.channel
        pending = channel.submit_command(command, arguments)
        probe = channel.submit_command("guest-sync", {"id": random.randint(1, 2**31 - 1)})
        gevent.wait([pending, probe], timeout=limit, count=1)
        if pending.ready():
            if not pending.successful() and isinstance(pending.exception, ConnectionLost):
                log.info("the connection closed after %s: taking it as done", command)
                return None
            unwrap_reply(pending.get(block=False), command)  # an error raises here
            return None
        if probe.ready():
            channel.abandon(pending, timed_out=False)
            if not probe.successful() and not isinstance(probe.exception, ConnectionLost):
                probe.get(block=False)
            return None
        channel.abandon(pending)
        channel.abandon(probe, timed_out=False)
        raise CallTimeout(command, limit if limit is not None else 0.0)

    def call_async(self, command: str, arguments: dict[str, Any] | None = None) -> AsyncResult:
        """Send ``command`` and return an ``AsyncResult`` for its ``return`` value.

        ``result.get(timeout=...)`` gives the value or raises the same errors as
        :meth:`call` (a gevent ``Timeout`` if it does not arrive in time; call
        :meth:`abandon` then so that the late reply is dropped quietly).
        """
        pending = self.channel.submit_command(command, arguments)
        result = _ReturnResult(pending)
        pending.rawlink(result.complete)
        return result

    def abandon(self, result: AsyncResult) -> None:
        """Give up on a :meth:`call_async` result; its late reply is dropped."""
        if isinstance(result, _ReturnResult):
            self.channel.abandon(result.pending)

    def ping(self, timeout: float | _Default | None = DEFAULT) -> None:
        """``guest-ping``: returns if the agent answers, raises otherwise."""
        self.call("guest-ping", timeout=timeout)

    def info(self, timeout: float | _Default | None = DEFAULT) -> dict[str, Any]:
        """``guest-info``: the agent's version and commands.

        Also learns which commands answer nothing on success (``success-response``).
        """
        result: dict[str, Any] = self.call("guest-info", timeout=timeout)
        for entry in result.get("supported_commands", ()):
            if isinstance(entry, dict) and entry.get("success-response") is False:
                self.no_reply.add(str(entry.get("name")))
        return result

    def close(self) -> None:
        """Close the connection; pending calls fail with ``ChannelClosed``."""
        self.channel.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Agent {self.url} {self.channel.state.value}>"


class _Wakeup:
    """Wakes one greenlet blocked in :meth:`wait` once: a reply or its timer, not both.

    Cheaper than ``AsyncResult.wait(timeout)``: no ``Timeout`` object, and a reply that
    arrives in the hub (fd transports read from a watcher callback) switches straight
    to the caller instead of going through a notification callback.
    """

    __slots__ = ("done", "hub", "waiter")

    def __init__(self) -> None:
        self.hub = get_hub()
        self.waiter = Waiter(self.hub)
        self.done = False

    def __call__(self, value: Any) -> None:
        if self.done:
            return
        self.done = True
        if getcurrent() is self.hub:
            self.waiter.switch(value)
        else:
            self.hub.loop.run_callback(self.waiter.switch, value)

    def wait(self) -> Any:
        return self.waiter.get()


class _ReturnResult(AsyncResult):  # type: ignore[misc]
    """An AsyncResult that holds the ``return`` value of a :class:`Call`."""

    def __init__(self, pending: Call) -> None:
        super().__init__()
        self.pending = pending

    def complete(self, pending: Call) -> None:
        if not pending.successful():
            self.set_exception(pending.exception)
            return
        try:
            self.set(unwrap_reply(pending.value, pending.command))
        except AgentError as exc:
            self.set_exception(exc)


def connect(url: str | Transport, *, timeout: float | None = 10.0,
            default_timeout: float | None = DEFAULT_TIMEOUT,
            handshake: str = "sync-delimited", reconnect: bool = True,
            wait: bool = False, max_message_size: int = DEFAULT_MAX_SIZE,
            logger: logging.Logger | None = None) -> Agent:
    """Connect to the agent at ``url`` and return an :class:`Agent`.

    ``url`` is e.g. ``unix:/run/qga.sock`` or ``tcp:127.0.0.1:4444``.  Waits up to
    ``timeout`` seconds for the transport to open and the handshake
    (``sync-delimited``, ``sync`` or ``none``) to finish, raising
    :class:`~qproxy.errors.ConnectFailed` otherwise.  With ``wait=True`` an agent that
    is not there yet is retried until ``timeout``.  With ``reconnect=True`` (default)
    the connection is reopened whenever it drops.
    """
    channel = Channel(url, handshake=handshake, reconnect=reconnect, retry_first_connect=wait,
                      max_message_size=max_message_size, logger=logger)
    try:
        channel.wait_ready(timeout)
    except BaseException:
        channel.close()
        raise
    return Agent(channel, default_timeout)
