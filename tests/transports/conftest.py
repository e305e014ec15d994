"""Fixtures for the transport tests: real pty lines with a real qemu-ga on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import qproxy
from ptys import Rig, rig


@pytest.fixture
def line_rig(workdir: Path) -> Iterator[Rig]:
    """socat pty pair with qemu-ga (isa-serial) on end A; tests open end B."""
    with rig(workdir) as r:
        yield r


@pytest.fixture
def agents() -> Iterator[list[qproxy.Agent]]:
    """A list to put agents in; every one is closed after the test."""
    opened: list[qproxy.Agent] = []
    yield opened
    for agent in opened:
        agent.close()
