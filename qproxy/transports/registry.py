"""Turn an agent URL into a transport.

A URL is ``SCHEME:REST[?NAME=VALUE&...]``.  Built-in schemes are listed in
:data:`BUILTIN`; any installed distribution can add schemes through the entry-point
group ``qproxy.transports`` (name = scheme, object = a :class:`Transport` subclass),
in the manner of pyserial's URL handlers.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from urllib.parse import parse_qsl

from ..errors import InvalidURL
from .base import Transport

ENTRY_POINT_GROUP = "qproxy.transports"

#: scheme -> "module:Class", imported on first use so optional dependencies stay optional.
BUILTIN: dict[str, str] = {
    "unix": "qproxy.transports.sockets:UnixTransport",
    "tcp": "qproxy.transports.sockets:TCPTransport",
    "serial": "qproxy.transports.serialport:SerialTransport",
    "rfc2217": "qproxy.transports.serialport:SerialTransport",
    "socket": "qproxy.transports.serialport:SerialTransport",
    "loop": "qproxy.transports.serialport:SerialTransport",
    "chardev": "qproxy.transports.chardev:CharDevTransport",
}

_registered: dict[str, type[Transport]] = {}


def register(scheme: str, cls: type[Transport]) -> None:
    """Register a transport class for ``scheme`` at run time (overrides others)."""
    _registered[scheme.lower()] = cls


def known_schemes() -> list[str]:
    """Every scheme that :func:`transport_for` can resolve, sorted."""
    names = set(BUILTIN) | set(_registered)
    names.update(ep.name.lower() for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _load(target: str) -> type[Transport]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise InvalidURL(f"{target} is not a qproxy Transport class")
    return cls


def _resolve(scheme: str) -> type[Transport] | None:
    if scheme in _registered:
        return _registered[scheme]
    if scheme in BUILTIN:
        return _load(BUILTIN[scheme])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == scheme:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Transport)):
                raise InvalidURL(f"entry point {ep.value} for {scheme!r} is not a Transport class")
            return cls
    return None


def split_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split ``scheme:rest?a=1&b=2`` into ``("scheme", "rest", {"a": "1", "b": "2"})``."""
    if not isinstance(url, str) or ":" not in url:
        raise InvalidURL(f"{url!r} is not an agent URL; expected SCHEME:ADDRESS, e.g. "
                         f"unix:/run/qga.sock (known schemes: {', '.join(known_schemes())})")
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if not scheme or not scheme.replace("-", "").replace("+", "").isalnum():
        raise InvalidURL(f"{url!r}: {scheme!r} is not a valid URL scheme")
    rest, _, query = rest.partition("?")
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise InvalidURL(f"{url!r}: malformed options {query!r}; expected a=1&b=2") from None
        options = dict(pairs)
    return scheme, rest, options


def transport_for(url: str, options: Mapping[str, str] | None = None) -> Transport:
    """Return an unopened transport for ``url``.

    Extra ``options`` are merged over those in the URL's query string.  Raises
    :class:`InvalidURL` naming the known schemes when the scheme is unknown.
    """
    scheme, rest, url_options = split_url(url)
    if options:
        url_options.update({k: str(v) for k, v in options.items()})
    cls = _resolve(scheme)
    if cls is None:
        raise InvalidURL(f"{url!r}: unknown scheme {scheme!r} "
                         f"(known schemes: {', '.join(known_schemes())})")
    return cls.from_url(scheme, rest, url_options)
