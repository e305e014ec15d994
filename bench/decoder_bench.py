"""Decoder micro-benchmarks against honest json.loads baselines (CPU only, no sockets)."""

from __future__ import annotations

import base64
import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any

from qproxy.core.decoder import DEFAULT_MAX_SIZE, Decoder


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def small_stream(count: int = 200_000) -> bytes:
    """``count`` qemu-ga style small replies, as the agent writes them."""
    return b"".join(b'{"return": {}, "id": %d}\n' % i for i in range(count))


def big_reply(total: int = DEFAULT_MAX_SIZE) -> bytes:
    """One guest-file-read style reply whose whole line is ``total`` bytes (random base64)."""
    head = b'{"return": {"count": 0, "buf-b64": "'
    tail = b'", "eof": false}, "id": 1}\n'
    room = (total - len(head) - len(tail)) // 4 * 4
    payload = base64.b64encode(os.urandom(room // 4 * 3))
    head = head.replace(b'"count": 0', b'"count": %d' % (room // 4 * 3))
    room = (total - len(head) - len(tail)) // 4 * 4
    payload = payload[:room]
    return head + payload + tail


def decoder_feed(chunks: list[bytes]) -> int:
    """Feed ``chunks`` to a fresh Decoder; returns the number of values it delivered."""
    out: list[Any] = []
    decoder = Decoder(out.append, max_size=DEFAULT_MAX_SIZE)
    feed = decoder.feed
    for chunk in chunks:
        feed(chunk)
    if decoder.stats.oversize or decoder.stats.parse_errors:
        raise RuntimeError(f"decoder trouble: {decoder.stats}")
    return len(out)


def lines_feed(chunks: list[bytes]) -> int:
    """The honest baseline: frame the same chunks on newlines, json.loads each line."""
    out: list[Any] = []
    append = out.append
    loads = json.loads
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        lines = chunk.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                append(loads(line))
    return len(out)


def whole_loads(data: bytes) -> int:
    """json.loads of the whole reply at once (the best case: no framing, no chunks)."""
    json.loads(data)
    return 1


def timed(fn: Callable[..., int], *args: Any) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - start


def msg_rates(chunks: list[bytes], rounds: int) -> tuple[list[float], list[float]]:
    """Messages/s of the decoder and of newline framing + json.loads, alternating per round."""
    dec, base = [], []
    for _ in range(rounds):
        n, t = timed(decoder_feed, chunks)
        dec.append(n / t)
        n, t = timed(lines_feed, chunks)
        base.append(n / t)
    return dec, base


def run_decoder(rounds: int) -> dict[str, Any]:
    """All the decoder rows, ``rounds`` samples each (what ``bench/run.py`` records)."""
    out: dict[str, Any] = {}
    stream = small_stream(200_000)
    chunks = chunked(stream, 65536)
    dec, base = msg_rates(chunks, rounds)
    out["small"] = {"messages": 200_000, "bytes": len(stream), "chunk": 65536,
                    "decoder_msgs_per_s": dec, "lines_json_loads_msgs_per_s": base}
    # The same replies one per read, as a channel with one call in flight sees them.
    singles = stream.splitlines(keepends=True)[:100_000]
    dec, base = msg_rates(singles, rounds)
    out["small_one_per_read"] = {"messages": len(singles), "decoder_msgs_per_s": dec,
                                 "lines_json_loads_msgs_per_s": base}
    del stream, chunks, singles
    big = big_reply(DEFAULT_MAX_SIZE)
    loads = []
    for _ in range(rounds):
        _, t = timed(whole_loads, big)
        loads.append(len(big) / t / 1e6)
    out["big"] = {"bytes": len(big), "json_loads_whole_mb_per_s": loads}
    for size in (65536, 4096):
        chunks = chunked(big, size)
        rates = []
        for _ in range(rounds):
            n, t = timed(decoder_feed, chunks)
            if n != 1:
                raise RuntimeError(f"the decoder delivered {n} values from one reply")
            rates.append(len(big) / t / 1e6)
        out["big"][f"decoder_{size}_mb_per_s"] = rates
        del chunks
        gc.collect()
    return out
