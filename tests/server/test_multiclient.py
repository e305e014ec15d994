"""Many unmodified clients share one real qemu-ga through ``qproxy serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gevent
import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol
from qemu.qmp.qmp_client import ExecuteError

CLIENTS = 20
CALLS = 100


def _client_id(n: int, i: int) -> Any:
    """Ids of three kinds: ints, strings, none at all."""
    kind = i % 3
    if kind == 0:
        return n * 100_000 + i
    if kind == 1:
        return f"client-{n}-call-{i}"
    return None


def _one_client(raw: Any, path: Path, n: int) -> list[str]:
    """Sync, then pipeline CALLS guest-sync (answered by the proxy) interleaved with
    guest-ping (answered by qemu-ga); check every reply is ours, in order."""
    problems: list[str] = []
    with raw(path, timeout=30) as client:
        client.sync_delimited()
        expected: list[dict[str, Any]] = []
        batch = b""
        for i in range(CALLS):
            cid = _client_id(n, i)
            sync = {"execute": "guest-sync", "arguments": {"id": n * 1000 + i}}
            ping: dict[str, Any] = {"execute": "guest-ping"}
            want_sync: dict[str, Any] = {"return": n * 1000 + i}
            want_ping: dict[str, Any] = {"return": {}}
            if cid is not None:
                sync["id"] = cid
                ping["id"] = [cid, "ping"]
                want_sync["id"] = cid
                want_ping["id"] = [cid, "ping"]
            batch += json.dumps(sync).encode() + b"\n" + json.dumps(ping).encode() + b"\n"
            expected += [want_sync, want_ping]
            if i % 10 == 9:  # a few pipelined bursts, not one byte at a time
                client.send(batch)
                batch = b""
        got = [client.read() for _ in expected]
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
            problems.append(f"client {n}: reply {first} is {got[first]}, "
                            f"expected {expected[first]}")
        client.sock.settimeout(0.2)
        try:
            extra = client.sock.recv(100)
        except OSError:
            extra = b""
        if extra or client.buf:
            problems.append(f"client {n}: unexpected extra bytes {client.buf + extra!r}")
    return problems


@pytest.mark.timeout(60)
def test_twenty_raw_clients_get_exactly_their_own_replies_in_order(
        qga_socket: Path, serve: Any, raw: Any) -> None:
    with serve(qga_socket) as (proc, proxy):
        jobs = [gevent.spawn(_one_client, raw, proxy, n) for n in range(CLIENTS)]
        gevent.joinall(jobs, timeout=45, raise_error=True)
        assert all(job.successful() for job in jobs), [job.exception for job in jobs]
        problems = [p for job in jobs for p in job.value]
        assert problems == []
        assert proc.poll() is None, "the server died"


@pytest.mark.timeout(30)
def test_qemu_qmp_legacy_client_works_unchanged(qga_socket: Path, serve: Any) -> None:
    with serve(qga_socket) as (_, proxy):
        qmp = QEMUMonitorProtocol(str(proxy))
        assert qmp.connect(negotiate=False) is None
        try:
            assert qmp.cmd("guest-ping") == {}
            info = qmp.cmd("guest-info")
            assert isinstance(info, dict) and info["version"]
            assert any(c["name"] == "guest-ping" for c in info["supported_commands"])
            # cmd() raises on an error reply; the error dict is the agent's own.
            with pytest.raises(ExecuteError) as err:
                qmp.cmd("guest-no-such-command")
            assert err.value.error_class == "CommandNotFound"
            # cmd_obj sends no id and gets the agent's reply, error dict and all, id-less.
            reply = qmp.cmd_obj({"execute": "guest-no-such-command"})
            assert reply["error"]["class"] == "CommandNotFound"
            assert "id" not in reply
            assert qmp.cmd_obj({"execute": "guest-ping"}) == {"return": {}}
            assert qmp.cmd_obj({"execute": "guest-ping", "id": "mine"}) == {
                "return": {}, "id": "mine"}
            # A blocked RPC comes back as the agent's error, too.
            reply = qmp.cmd_obj({"execute": "guest-set-time", "id": "t"})
            assert reply["id"] == "t" and reply["error"]["class"] == "CommandNotFound"
        finally:
            qmp.close()
