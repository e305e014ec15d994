"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import qemu_ga, reference_agent


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths must stay under 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="qp-") as d:
        yield Path(d)


@pytest.fixture
def qga_socket(workdir: Path) -> Iterator[Path]:
    """A real qemu-ga in unix-listen mode; yields its socket path."""
    with qemu_ga(workdir) as (_, sock):
        yield sock


@pytest.fixture
def refagent_socket(workdir: Path) -> Iterator[Path]:
    """The reference agent as a separate process; yields its socket path."""
    with reference_agent(workdir) as (_, sock):
        yield sock


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
