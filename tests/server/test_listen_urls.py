"""Listen URLs: loopback by default, clear errors for the rest."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from qproxy.errors import InvalidURL
from qproxy.server import ListenError, bind
from qproxy.server.listener import parse_listen_url


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "expected"), [
    ("tcp:4444", (socket.AF_INET, ("127.0.0.1", 4444))),
    ("tcp::4444", (socket.AF_INET, ("127.0.0.1", 4444))),
    ("tcp:0.0.0.0:4444", (socket.AF_INET, ("0.0.0.0", 4444))),
    ("tcp:[::1]:0", (socket.AF_INET6, ("::1", 0))),
    ("tcp://127.0.0.1:5", (socket.AF_INET, ("127.0.0.1", 5))),
    ("unix:/run/qproxy.sock", (socket.AF_UNIX, "/run/qproxy.sock")),
    ("unix:///run/qproxy.sock", (socket.AF_UNIX, "/run/qproxy.sock")),
])
def test_parse_listen_url(url: str, expected: tuple[int, object]) -> None:
    assert parse_listen_url(url) == expected


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "words"), [
    ("tcp:host:port", "expected tcp:PORT"),
    ("tcp:70000", "out of range"),
    ("unix:", "needs a path"),
    ("unix:/" + "x" * 120, "too long"),
    ("serial:/dev/ttyS0", "listens on unix:PATH or tcp"),
    ("nonsense", "not an agent URL"),
    ("unix:/tmp/a.sock?mode=1", "unknown listen option(s) mode (allowed: allow, deny)"),
])
def test_bad_listen_urls_say_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(InvalidURL, match=re.escape(words)):
        parse_listen_url(url)


@pytest.mark.timeout(10)
def test_bind_errors_are_listen_errors(workdir: Path) -> None:
    with pytest.raises(ListenError, match="directory does not exist"):
        bind(f"unix:{workdir / 'missing' / 'p.sock'}")
    first = bind("tcp:0")
    try:
        with pytest.raises(ListenError, match="another program listens there"):
            bind(first.url)
    finally:
        first.close()
