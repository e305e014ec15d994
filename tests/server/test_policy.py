"""Command policy per listener: allow and deny patterns (unit, and against qemu-ga)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qproxy.errors import InvalidURL
from qproxy.server import Server
from qproxy.server.policy import CommandPolicy, patterns


def test_patterns_and_decisions() -> None:
    assert patterns(["guest-ping, guest-info", "guest-get-*"]) == [
        "guest-ping", "guest-info", "guest-get-*"]
    policy = CommandPolicy(allow=["guest-ping", "guest-get-*"], deny=["guest-get-users"])
    assert policy.permits("guest-ping") and policy.permits("guest-get-osinfo")
    assert not policy.permits("guest-get-users")  # denial wins
    assert not policy.permits("guest-exec")
    assert policy.permits("guest-sync-delimited")  # answered by the server itself
    assert CommandPolicy(deny=["guest-file-*"]).permits("guest-exec")
    with pytest.raises(InvalidURL):
        CommandPolicy(allow=[])


def test_a_listener_refines_the_server_wide_policy() -> None:
    base = CommandPolicy(deny=["guest-exec*"])
    assert CommandPolicy.combine(None, {}) is None
    mine = CommandPolicy.combine(base, {"allow": "guest-*", "deny": "guest-file-*"})
    assert mine is not None
    assert mine.permits("guest-ping")
    assert not mine.permits("guest-exec") and not mine.permits("guest-file-open")


@pytest.mark.timeout(30)
def test_each_socket_gets_its_policy_from_a_real_agent(
        qga_socket: Path, workdir: Path, raw: Any) -> None:
    monitor = f"unix:{workdir / 'mon.sock'}?allow=guest-ping,guest-info,guest-get-*"
    admin = f"unix:{workdir / 'adm.sock'}"
    server = Server(f"unix:{qga_socket}", [monitor, admin], deny=["guest-get-users"]).start()
    try:
        with raw(workdir / "mon.sock") as mon, raw(workdir / "adm.sock") as adm:
            mon.sync_delimited()  # always answered
            assert mon.call("guest-ping", id=1) == {"return": {}, "id": 1}
            assert "name" in mon.call("guest-get-osinfo", id=2)["return"]
            assert "return" in mon.call("guest-get-time", id=3)  # guest-get-* is allowed
            for command, cid in (("guest-exec-status", 4), ("guest-get-users", 5)):
                assert mon.call(command, {"pid": 1} if "exec" in command else None,
                                id=cid) == {
                    "error": {"class": "CommandNotFound",
                              "desc": f"Command {command} has been disabled"}, "id": cid}
            info = mon.call("guest-info", id=6)["return"]["supported_commands"]
            enabled = {c["name"]: c["enabled"] for c in info}
            assert enabled["guest-ping"] is True and enabled["guest-exec"] is False
            assert enabled["guest-get-users"] is False
            # The other socket has only the server-wide denial.
            assert "error" not in adm.call("guest-get-time", id=7)
            assert adm.call("guest-get-users", id=8)["error"]["class"] == "CommandNotFound"
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_unknown_listen_options_are_one_clear_line(qga_socket: Path, workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qproxy", "serve", f"unix:{qga_socket}", "--listen",
         f"unix:{workdir / 'x.sock'}?colour=blue"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"qproxy serve: unix:{workdir / 'x.sock'}?colour=blue: unknown listen option(s) "
        "colour (allowed: allow, deny)"]
