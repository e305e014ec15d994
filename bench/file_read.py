"""One 48 MiB reply: guest-file-read through qemu-ga and qproxy-blob through the reference
agent, raw socket + json.loads against the qproxy API."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
import qproxy_clients
from rates import Bench

from qproxy.core.decoder import DEFAULT_MAX_SIZE

FILE_READ_SIZE = 48 * 1024 * 1024  # qemu-ga's cap on guest-file-read's count


@contextlib.contextmanager
def qga_file_handle(call: Callable[[str, dict[str, Any]], Any], path: Path) -> Iterator[int]:
    handle = call("guest-file-open", {"path": str(path), "mode": "r"})
    try:
        yield int(handle)
    finally:
        call("guest-file-close", {"handle": handle})


def run_file_read(bench: Bench, rounds: int) -> dict[str, Any]:
    """48 MiB guest-file-read through qemu-ga: raw socket + json.loads against qproxy."""
    data_file = bench.workdir / "blob.bin"
    with open(data_file, "wb") as f:
        f.write(os.urandom(FILE_READ_SIZE))
    expect = base64.b64encode(data_file.read_bytes()[:1024])[:1024].decode()
    sock = bench.socks["qemu-ga"]
    out: dict[str, Any] = {"bytes": FILE_READ_SIZE, "raw_seconds": [], "qproxy_seconds": []}

    # Does the default max_message_size take the reply (64 MiB of base64 plus the envelope)?
    try:
        with qproxy_clients.connected(sock) as agent, \
                qga_file_handle(agent.call, data_file) as h:
            agent.call("guest-file-read", {"handle": h, "count": FILE_READ_SIZE}, timeout=120)
        out["default_max_message_size"] = "ok"
        max_size = DEFAULT_MAX_SIZE
    except Exception as exc:
        out["default_max_message_size"] = (f"fails ({type(exc).__name__}: {str(exc)[:160]}); "
                                           "measured with max_message_size=96 MiB")
        max_size = 96 * 1024 * 1024
    out["max_message_size"] = max_size

    def raw_once() -> float:
        s = common.raw_connect(sock)
        try:
            ident = iter(range(2, 10**9))

            def call(cmd: str, args: dict[str, Any]) -> Any:
                req = json.dumps({"execute": cmd, "arguments": args, "id": next(ident)}).encode()
                return common.raw_big_call(s, req + b"\n")["return"]

            with qga_file_handle(call, data_file) as h:
                req = json.dumps({"execute": "guest-file-read",
                                  "arguments": {"handle": h, "count": FILE_READ_SIZE},
                                  "id": 1}).encode() + b"\n"
                start = time.perf_counter()
                reply = common.raw_big_call(s, req)
                secs = time.perf_counter() - start
            if not reply["return"]["buf-b64"].startswith(expect):
                raise RuntimeError("raw guest-file-read returned the wrong bytes")
            return secs
        finally:
            s.close()

    def qproxy_once() -> float:
        with qproxy_clients.connected(sock, max_message_size=max_size) as agent:
            with qga_file_handle(agent.call, data_file) as h:
                result, secs = qproxy_clients.big_call(
                    agent, "guest-file-read", {"handle": h, "count": FILE_READ_SIZE})
            if result["count"] != FILE_READ_SIZE or not result["buf-b64"].startswith(expect):
                raise RuntimeError("qproxy guest-file-read returned the wrong bytes")
            return secs

    for r in range(rounds):
        pair = [("raw_seconds", raw_once), ("qproxy_seconds", qproxy_once)]
        for key, fn in (pair if r % 2 == 0 else pair[::-1]):
            out[key].append(fn())
            gc.collect()
    data_file.unlink()

    # The same size through the reference agent's qproxy-blob (a synthetic reply).
    size = FILE_READ_SIZE * 4 // 3
    ref = bench.socks["refagent"]
    out["blob_raw_seconds"], out["blob_qproxy_seconds"] = [], []
    blob_req = json.dumps({"execute": "qproxy-blob", "arguments": {"size": size},
                           "id": 1}).encode() + b"\n"
    with qproxy_clients.connected(ref, max_message_size=max_size) as agent:
        for _ in range(rounds):
            s = common.raw_connect(ref)
            try:
                start = time.perf_counter()
                common.raw_big_call(s, blob_req)
                out["blob_raw_seconds"].append(time.perf_counter() - start)
            finally:
                s.close()
            _, secs = qproxy_clients.big_call(agent, "qproxy-blob", {"size": size})
            out["blob_qproxy_seconds"].append(secs)
            gc.collect()
    return out
