"""The careful re-parse: value boundaries and garbage runs, in stream order."""

from __future__ import annotations

import re

from qproxy.core.salvage import CORRUPT, Garbage, salvage, value_end

OBJECTS = re.compile(rb"{")


def test_value_end_skips_strings_and_escapes() -> None:
    buf = b'{"a": "}\\"{", "b": [1, {"c": "]"}]} tail'
    end = value_end(buf, 0)
    assert end is not None and buf[:end] == b'{"a": "}\\"{", "b": [1, {"c": "]"}]}'
    assert value_end(b'{"a": [1, 2', 0) is None
    assert value_end(b'{"a": "x\ny"}', 0) == CORRUPT


def test_salvage_keeps_stream_order() -> None:
    items, tail = salvage(b'xx{"a": 1} junk {"b": bad} {"c": 3}', OBJECTS)
    kinds = [("garbage", i.size) if isinstance(i, Garbage) else i for i in items]
    assert kinds[0] == ("garbage", 2)
    assert kinds[1] == {"a": 1}
    assert isinstance(items[2], Garbage)
    assert kinds[-1] == {"c": 3}
    assert tail is None


def test_salvage_reports_an_unfinished_well_formed_tail() -> None:
    buf = b'{"a": 1}{"b": [1, 2'
    items, tail = salvage(buf, OBJECTS)
    assert items == [{"a": 1}] and tail == 8


def test_salvage_skips_an_unfinished_tail_that_is_already_wrong() -> None:
    items, tail = salvage(b'{{{ {"ok": true}', OBJECTS)
    assert items[-1] == {"ok": True} and tail is None
