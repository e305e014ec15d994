"""guest-file handles belong to the session that opened them (real qemu-ga)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import gevent
import pytest

from qproxy.server import Server


def _agent_says(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    """Ask the agent directly through the server's channel (no session in between)."""
    reply: dict[str, Any] = server.channel.submit(request).get(timeout=10)
    return reply


@pytest.mark.timeout(30)
def test_only_the_opener_may_use_a_handle_and_leftovers_are_closed(
        qga_socket: Path, workdir: Path, raw: Any) -> None:
    secret = workdir / "secret.txt"
    secret.write_bytes(b"for the opener only\n")
    server = Server(f"unix:{qga_socket}", [f"unix:{workdir / 'p.sock'}"]).start()
    try:
        proxy = workdir / "p.sock"
        with raw(proxy) as owner, raw(proxy) as other:
            opened = owner.call("guest-file-open", {"path": str(secret), "mode": "r"}, id=1)
            handle = opened["return"]
            assert type(handle) is int

            # Another session cannot use it: refused with the agent's own wording.
            refused = other.call("guest-file-read", {"handle": handle, "count": 100}, id=2)
            assert refused == {"error": {"class": "GenericError",
                                         "desc": f"handle '{handle}' has not been found"},
                               "id": 2}
            assert other.call("guest-file-close", {"handle": handle}, id=3)["error"]

            # The owner can, and the file is untouched by the refusals.
            read = owner.call("guest-file-read", {"handle": handle, "count": 100}, id=4)
            assert base64.b64decode(read["return"]["buf-b64"]) == secret.read_bytes()

            # A handle the owner closed is no longer its own either.
            second = owner.call("guest-file-open", {"path": str(secret)}, id=5)["return"]
            assert owner.call("guest-file-close", {"handle": second}, id=6) == {
                "return": {}, "id": 6}
            assert "not been found" in owner.call(
                "guest-file-seek", {"handle": second, "offset": 0, "whence": 0},
                id=7)["error"]["desc"]

        # The owner left with `handle` open: the server closed it in the agent.
        for _ in range(100):
            gone = _agent_says(server, {"execute": "guest-file-read",
                                        "arguments": {"handle": handle, "count": 1}})
            if "error" in gone:
                break
            gevent.sleep(0.05)
        assert gone["error"]["desc"] == f"handle '{handle}' has not been found"
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_handle_opened_as_the_client_leaves_is_closed_too(
        qga_socket: Path, workdir: Path, raw: Any) -> None:
    target = workdir / "late.txt"
    target.write_bytes(b"x")
    server = Server(f"unix:{qga_socket}", [f"unix:{workdir / 'p.sock'}"]).start()
    try:
        # qemu-ga numbers handles in sequence: learn the next one.
        before = _agent_says(server, {"execute": "guest-file-open",
                                      "arguments": {"path": str(target)}})["return"]
        _agent_says(server, {"execute": "guest-file-close", "arguments": {"handle": before}})
        with raw(workdir / "p.sock") as client:
            # Queue work ahead of the open, and leave while the open is still unanswered.
            for _ in range(500):
                client.send({"execute": "guest-info"})
            client.send({"execute": "guest-file-open", "arguments": {"path": str(target)}})
            for _ in range(400):
                if any(c.command == "guest-file-open"
                       for c in server.channel.router.pending.values()):
                    break
                gevent.sleep(0.005)
            else:
                pytest.fail("the open never went out")
        lost = before + 1
        # It was really opened (by the agent, after the client left) ...
        for _ in range(200):
            if not any(c.command == "guest-file-open"
                       for c in server.channel.router.pending.values()):
                break
            gevent.sleep(0.02)
        # ... and then closed by the server: reading it fails.
        for _ in range(100):
            gone = _agent_says(server, {"execute": "guest-file-read",
                                        "arguments": {"handle": lost, "count": 1}})
            if "error" in gone:
                break
            gevent.sleep(0.05)
        assert gone["error"]["desc"] == f"handle '{lost}' has not been found"
        # Sequence check: the next handle is the one after it, so it did exist.
        after = _agent_says(server, {"execute": "guest-file-open",
                                     "arguments": {"path": str(target)}})["return"]
        assert after == lost + 1
        _agent_says(server, {"execute": "guest-file-close", "arguments": {"handle": after}})
    finally:
        server.stop()
