"""Agent URLs: parsing, the registry, entry points."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

import pytest

from qproxy.errors import InvalidURL
from qproxy.transports import Transport, known_schemes, register, split_url, transport_for
from qproxy.transports.sockets import TCPTransport, UnixTransport


def test_split_url() -> None:
    assert split_url("unix:/run/qga.sock") == ("unix", "/run/qga.sock", {})
    assert split_url("TCP:127.0.0.1:4444?connect_timeout=2") == (
        "tcp", "127.0.0.1:4444", {"connect_timeout": "2"})


@pytest.mark.parametrize("url,expected", [
    ("unix:/run/qga.sock", "/run/qga.sock"),
    ("unix:///run/qga.sock", "/run/qga.sock"),
    ("unix:relative.sock", "relative.sock"),
])
def test_unix_urls(url: str, expected: str) -> None:
    t = transport_for(url)
    assert isinstance(t, UnixTransport) and t.address == expected


@pytest.mark.parametrize("url,expected", [
    ("tcp:127.0.0.1:4444", ("127.0.0.1", 4444)),
    ("tcp://localhost:1", ("localhost", 1)),
    ("tcp:[::1]:65535", ("::1", 65535)),
])
def test_tcp_urls(url: str, expected: tuple[str, int]) -> None:
    t = transport_for(url)
    assert isinstance(t, TCPTransport) and t.address == expected


@pytest.mark.parametrize("url,message", [
    ("no-colon-here", "SCHEME:ADDRESS"),
    ("carrier-pigeon:coop", "known schemes: "),
    ("unix:", "needs a path"),
    ("tcp:127.0.0.1", "HOST:PORT"),
    ("tcp:127.0.0.1:http", "not a number"),
    ("tcp:127.0.0.1:70000", "out of range"),
    ("unix:/x?colour=blue", "unknown option(s) colour"),
    ("unix:/x?connect_timeout=soon", "must be a number"),
])
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidURL) as err:
        transport_for(url)
    assert message in str(err.value)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(InvalidURL) as err:
        transport_for("bogus:thing")
    for scheme in ("unix", "tcp", "serial", "chardev"):
        assert scheme in str(err.value)


def test_entry_points_are_installed() -> None:
    names = {ep.name for ep in entry_points(group="qproxy.transports")}
    assert {"unix", "tcp"} <= names
    assert {"unix", "tcp"} <= set(known_schemes())


class _Dummy(UnixTransport):
    schemes = ("dummy",)

    @classmethod
    def from_url(cls, scheme: str, rest: str, options: Mapping[str, str]) -> Transport:
        return cls(f"{scheme}:{rest}", 1, rest, 1.0)


def test_register_a_scheme_at_run_time() -> None:
    register("dummy", _Dummy)
    assert isinstance(transport_for("dummy:/x"), _Dummy)
    assert "dummy" in known_schemes()
