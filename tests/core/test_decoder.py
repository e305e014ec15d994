"""The stream decoder: framing, 0xFF resets, garbage, size limits, chunking."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qproxy.core.decoder import BACKEND_NAME, Decoder
from qproxy.errors import MessageTooLarge, ProtocolError

# A stream as qemu-ga 7.2 sends it after a client's 0xFF + guest-sync-delimited, then a few
# pipelined replies (ids of several JSON types, an error, non-ASCII text).
RECORDED = (
    b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n'
    b'\xff{"return": 123}\n'
    b'{"return": {}, "id": "abc"}\n'
    b'{"return": {}, "id": {"x": [1]}}\n'
    b'{"id": 5, "error": {"class": "CommandNotFound", '
    b'"desc": "The command nope has not been found"}}\n'
    b'{"return": {"name": "D\xc3\xa9bian \\u00e9 \\"q\\"", "n": [1.5, -2, true, null]}, "id": 7}\n'
)
EXPECTED: list[Any] = [
    {"error": {"class": "GenericError", "desc": "JSON parse error, stray '\ufffd'"}},
    {"return": 123},
    {"return": {}, "id": "abc"},
    {"return": {}, "id": {"x": [1]}},
    {"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}},
    {"return": {"name": 'D\u00e9bian \u00e9 "q"', "n": [1.5, -2, True, None]}, "id": 7},
]


class Collector:
    def __init__(self, **kwargs: Any) -> None:
        self.values: list[Any] = []
        self.errors: list[ProtocolError] = []
        self.resets = 0
        self.decoder = Decoder(self.values.append, on_error=self.errors.append,
                               on_reset=self._reset, **kwargs)

    def _reset(self) -> None:
        self.resets += 1

    def feed(self, *chunks: bytes) -> list[Any]:
        for chunk in chunks:
            self.decoder.feed(chunk)
        return self.values


def test_backend_is_yajl2_c() -> None:
    assert BACKEND_NAME == "yajl2_c"


def test_whole_stream() -> None:
    c = Collector()
    assert c.feed(RECORDED) == EXPECTED
    assert c.resets == 1
    assert c.errors == []


@pytest.mark.parametrize("split", range(1, len(RECORDED)))
def test_every_split_point(split: int) -> None:
    c = Collector()
    c.feed(RECORDED[:split])
    before = len(c.values)
    c.feed(RECORDED[split:])
    assert c.values == EXPECTED
    # Nothing was delivered twice, nothing early: the prefix held only whole values.
    assert before == sum(1 for v in EXPECTED if _ends_within(v, RECORDED[:split]))


def _ends_within(value: Any, prefix: bytes) -> bool:
    index = EXPECTED.index(value)
    lines = RECORDED.split(b"\n")
    end = len(b"\n".join(lines[: index + 1]))  # offset of this value's newline
    return end <= len(prefix)


def test_byte_by_byte() -> None:
    c = Collector()
    for i in range(len(RECORDED)):
        c.feed(RECORDED[i:i + 1])
    assert c.values == EXPECTED


def test_value_without_newline_is_delivered_at_once() -> None:
    c = Collector()
    c.feed(b'\xff{"_xport_event": "guest_init", "_xport_arg_sid": 42}')
    assert c.values == [{"_xport_event": "guest_init", "_xport_arg_sid": 42}]
    c.feed(b'{"return": {"a": [1, {"b": 2}]}}  ')
    assert c.values[-1] == {"return": {"a": [1, {"b": 2}]}}


def test_large_value_without_newline_is_delivered_when_complete() -> None:
    c = Collector()
    body = b'{"return": "' + b"A" * 300_000 + b'"}'
    for i in range(0, len(body), 4096):
        c.feed(body[i:i + 4096])
    assert c.values == [{"return": "A" * 300_000}]


def test_ff_in_the_middle_of_a_value_drops_it() -> None:
    c = Collector()
    c.feed(b'{"return": {"a": "half', b'\xff', b'{"return": 2}\n')
    assert c.values == [{"return": 2}]
    assert c.resets == 1
    assert c.decoder.stats.garbage_bytes > 0


def test_ff_inside_a_string() -> None:
    c = Collector()
    c.feed(b'{"return": "ab\xffcd"}\n{"return": 3}\n')
    assert c.values == [{"return": 3}]


def test_garbage_before_between_and_after() -> None:
    c = Collector(objects_only=True)
    c.feed(b'login: root\r\nPassword:\n{"return": 1}\n[  12.345] kernel: hello\n'
           b'{"return": 2}\nnoise-without-newline')
    c.feed(b'{"return": 3}\n')
    assert c.values == [{"return": 1}, {"return": 2}, {"return": 3}]
    assert c.decoder.stats.garbage_bytes >= len("login: root")
    assert c.errors and all(isinstance(e, ProtocolError) for e in c.errors)


def test_non_objects_are_values_unless_objects_only() -> None:
    assert Collector().feed(b'[  12.345]\n{"return": 1}\n') == [[12.345], {"return": 1}]
    c = Collector(objects_only=True)
    assert c.feed(b'[  12.345] kernel: x\n{"return": 1}\n') == [{"return": 1}]


def test_garbage_on_the_same_line_as_a_value() -> None:
    c = Collector()
    c.feed(b'xx{"return": 1}yy{"return": 2}\n')
    assert c.values == [{"return": 1}, {"return": 2}]


def test_garbage_inside_a_value() -> None:
    c = Collector()
    c.feed(b'{"return": 1}\n{"return": {"a": nonsense}}\n{"return": 3}\n')
    assert c.values == [{"return": 1}, {"return": 3}]
    assert c.decoder.stats.parse_errors >= 1


def test_raw_newline_inside_a_string_is_corruption() -> None:
    c = Collector()
    c.feed(b'{"return": "abc\n{"return": 4}\n')
    assert c.values == [{"return": 4}]


def test_unbalanced_garbage_does_not_swallow_later_values_after_a_reset() -> None:
    c = Collector()
    c.feed(b'{{{{ [[[ line noise \n')
    c.feed(b'\xff{"return": 5}\n')
    assert c.values == [{"return": 5}]


def test_values_split_around_garbage_across_chunks() -> None:
    c = Collector()
    c.feed(b'{"return": 1}{"ret', b'urn": 2}\x01\x02garbage\n', b'{"return": 3}\n')
    assert c.values == [{"return": 1}, {"return": 2}, {"return": 3}]


def test_over_limit_value_is_reported_and_skipped() -> None:
    c = Collector(max_size=1000)
    big = b'{"return": "' + b"x" * 5000 + b'"}\n'
    c.feed(big[:700], big[700:3000], big[3000:], b'{"return": "small"}\n')
    assert c.values == [{"return": "small"}]
    assert len(c.errors) == 1 and isinstance(c.errors[0], MessageTooLarge)
    assert c.decoder.stats.oversize == 1


def test_over_limit_value_in_one_chunk() -> None:
    c = Collector(max_size=1000)
    c.feed(b'{"return": 1}\n{"return": "' + b"y" * 2000 + b'"}\n{"return": 2}\n')
    assert c.values == [{"return": 1}, {"return": 2}]
    assert isinstance(c.errors[0], MessageTooLarge)


def test_memory_stays_bounded_while_discarding() -> None:
    c = Collector(max_size=10_000)
    c.feed(b'{"return": "')
    for _ in range(100):
        c.feed(b"z" * 4096)
        assert c.decoder.buffered <= 10_000 + 4096
    c.feed(b'"}\n{"return": 9}\n')
    assert c.values == [{"return": 9}]


def test_a_value_of_exactly_the_limit_passes() -> None:
    line = b'{"return": "' + b"k" * 100 + b'"}\n'
    c = Collector(max_size=len(line))
    c.feed(line[:50], line[50:])
    assert c.values == [{"return": "k" * 100}]


def test_large_reply_in_small_chunks_is_fed_linearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder must not hand ijson a growing partial token chunk after chunk."""
    fed: list[int] = []
    real_send = Decoder._send

    def counting_send(self: Decoder, data: bytes) -> None:
        fed.append(len(data))
        real_send(self, data)

    monkeypatch.setattr(Decoder, "_send", counting_send)
    size = 8 * 1024 * 1024
    reply = b'{"return": {"count": 1, "buf-b64": "' + b"QUJD" * (size // 4) + b'", "eof": false}}\n'
    c = Collector()
    for i in range(0, len(reply), 4096):
        c.feed(reply[i:i + 4096])
    assert len(c.values) == 1 and len(c.values[0]["return"]["buf-b64"]) == size
    # The partial line is held until its newline, then fed once: no re-scan at all.
    assert fed == [len(reply)]


def test_callback_errors_do_not_kill_the_stream() -> None:
    seen: list[Any] = []

    def fragile(value: Any) -> None:
        seen.append(value)
        if value == 1:
            raise RuntimeError("consumer bug")

    d = Decoder(fragile)
    d.feed(b"1\n2\n")
    assert seen == [1, 2]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
       ensure_ascii=st.booleans(), compact=st.booleans())
def test_random_chunking_round_trips(values: list[Any], cuts: list[int], ensure_ascii: bool,
                                     compact: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    stream = b"".join(json.dumps(v, ensure_ascii=ensure_ascii, separators=separators).encode()
                      + b"\n" for v in values)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    c = Collector()
    for a, b in itertools.pairwise(points):
        c.feed(stream[a:b])
    assert c.values == [_float32_normalise(v) for v in values]
    assert c.errors == []


@settings(max_examples=200, deadline=None)
@given(objects=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4),
                        min_size=1, max_size=6),
       garbage=st.lists(st.binary(max_size=12).filter(lambda b: b"\xff" not in b
                                                      and b"}" not in b), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_garbage_between_lines_never_costs_a_value(objects: list[dict[str, Any]],
                                                   garbage: list[bytes], cuts: list[int]) -> None:
    """Garbage on lines of its own, each followed by a 0xFF resync as the channel sends it.

    (The garbage holds no ``}``, so it can never form an object of its own; a stray
    ``[]`` is valid JSON, hence ``objects_only`` as the channel uses it.)
    """
    parts: list[bytes] = []
    for i, obj in enumerate(objects):
        if i < len(garbage):
            parts.append(garbage[i] + b"\n\xff")
        parts.append(json.dumps(obj).encode() + b"\n")
    stream = b"".join(parts)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    c = Collector(objects_only=True)
    for a, b in itertools.pairwise(points):
        c.feed(stream[a:b])
    assert c.values == [_float32_normalise(o) for o in objects]


def _float32_normalise(value: Any) -> Any:
    """json.dumps of a float round-trips exactly, so values compare equal as they are."""
    return json.loads(json.dumps(value))


def test_garbage_is_reported_in_stream_order() -> None:
    events: list[Any] = []
    d = Decoder(events.append, on_error=lambda exc: events.append("error"))
    d.feed(b'{"a": 1}\n{"b": 2} garbage {"c": 3}\n')
    assert events == [{"a": 1}, {"b": 2}, "error", {"c": 3}]
