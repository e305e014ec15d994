"""The reference agent's commands: a small, honest subset of qemu-ga plus test commands.

Each handler takes the request's ``arguments`` dict and returns the ``return`` value,
or raises :class:`CommandError` for an error reply.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent

VERSION = "qproxy-refagent 0.1"


class CommandError(Exception):
    """An error reply: ``{"error": {"class": cls, "desc": desc}}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc


@dataclass(frozen=True)
class Command:
    """One command the agent knows."""

    name: str
    handler: Callable[[dict[str, Any]], Any]
    success_response: bool = True


def _int_arg(args: dict[str, Any], name: str, default: int | None = None) -> int:
    value = args.get(name, default)
    if type(value) is not int:
        raise CommandError("GenericError", f"Parameter '{name}' expects integer")
    return value


def _num_arg(args: dict[str, Any], name: str) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError("GenericError", f"Parameter '{name}' expects number")
    return float(value)


def _ping(args: dict[str, Any]) -> dict[str, Any]:
    return {}


def _sync(args: dict[str, Any]) -> int:
    return _int_arg(args, "id")


def _osinfo(args: dict[str, Any]) -> dict[str, Any]:
    uname = platform.uname()
    return {"name": "qproxy reference agent", "id": "qproxy-refagent",
            "kernel-release": uname.release, "machine": uname.machine}


def _echo(args: dict[str, Any]) -> dict[str, Any]:
    return args


def _sleep(args: dict[str, Any]) -> dict[str, Any]:
    seconds = _num_arg(args, "seconds")
    if not 0 <= seconds <= 3600:
        raise CommandError("GenericError", "Parameter 'seconds' must be within 0..3600")
    start = time.monotonic()
    gevent.sleep(seconds)
    return {"slept": round(time.monotonic() - start, 6)}


def _blob(args: dict[str, Any]) -> dict[str, Any]:
    size = _int_arg(args, "size")
    if not 0 <= size <= 128 * 1024 * 1024:
        raise CommandError("GenericError", "Parameter 'size' must be within 0..128 MiB")
    return {"size": size, "data": "x" * size}


def _noreply(args: dict[str, Any]) -> None:
    """Like guest-shutdown: no reply on success, an error if asked to fail."""
    if args.get("fail"):
        raise CommandError("GenericError", "failure requested by qproxy-noreply")


def _fail(args: dict[str, Any]) -> None:
    raise CommandError(str(args.get("class", "GenericError")),
                       str(args.get("desc", "failure requested by qproxy-fail")))


def build_commands(extra: list[Command] | None = None) -> dict[str, Command]:
    """The command table: qemu-ga's basics, the test commands, and ``extra``."""
    table = [
        Command("guest-ping", _ping),
        Command("guest-sync", _sync),
        Command("guest-sync-delimited", _sync),
        Command("guest-get-osinfo", _osinfo),
        Command("qproxy-echo", _echo),
        Command("qproxy-sleep", _sleep),
        Command("qproxy-blob", _blob),
        Command("qproxy-fail", _fail),
        Command("qproxy-noreply", _noreply, success_response=False),
    ]
    commands = {c.name: c for c in table + (extra or [])}

    def info(args: dict[str, Any]) -> dict[str, Any]:
        return {"version": VERSION,
                "supported_commands": [
                    {"name": c.name, "enabled": True, "success-response": c.success_response}
                    for c in commands.values()]}

    commands["guest-info"] = Command("guest-info", info)
    return commands
