"""The careful re-parse after ijson reports an error: find every good value in a buffer.

The decoder's fast path hands ijson whole lines; when ijson rejects one, the buffer is
searched value by value here.  A candidate starts at ``{`` (or ``[``), its end is found by
counting brackets outside strings (:func:`value_end`, done with regular expressions so a
64 MiB string is skipped at C speed), and a fresh parser confirms it.  What fails to parse
is garbage, and the search goes on from the next byte.
"""

from __future__ import annotations

import re
from typing import Any

import ijson

from .parser import new_parser

_JSONError = ijson.common.JSONError
_STRUCT = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\\n]')
_WS = b" \t\r\n"
#: :func:`value_end`'s answer for bytes that cannot be JSON (a raw newline in a string).
CORRUPT = -1


class Garbage:
    """A run of bytes that are not JSON, found by :func:`salvage`."""

    __slots__ = ("pos", "size")

    def __init__(self, pos: int, size: int) -> None:
        self.pos = pos
        self.size = size


def value_end(buf: bytes, pos: int) -> int | None:
    """End offset of the container value starting at ``buf[pos]`` (``{`` or ``[``).

    Returns ``None`` when the value is not complete yet and ``-1`` when a raw newline
    inside a string shows that the bytes are corrupt.  Brackets are counted, strings
    skipped; whether the value is well-formed is left to the parser.
    """
    depth = 0
    i = pos
    while True:
        m = _STRUCT.search(buf, i)
        if m is None:
            return None
        c = buf[m.start()]
        if c == 0x22:  # '"'
            j = m.end()
            while True:
                s = _IN_STRING.search(buf, j)
                if s is None:
                    return None
                sc = buf[s.start()]
                if sc == 0x5C:  # backslash escapes the next byte
                    j = s.start() + 2
                    continue
                if sc == 0x0A:
                    return CORRUPT
                j = s.end()
                break
            i = j
        elif c in (0x7B, 0x5B):
            depth += 1
            i = m.end()
        else:
            depth -= 1
            i = m.end()
            if depth <= 0:
                return i


def salvage(buf: bytes, start: re.Pattern[bytes]) -> tuple[list[Any], int | None]:
    """Every well-formed value in ``buf`` and every :class:`Garbage` run, in stream order.

    ``start`` finds where a value may begin.  Also returns the offset of an unfinished
    last value that is well-formed so far (``None`` if there is none): the caller's live
    parser carries on with it.
    """
    items: list[Any] = []

    def garbage(pos: int, size: int) -> None:
        if size <= 0:
            return
        if items and isinstance(items[-1], Garbage):
            items[-1].size += size
        else:
            items.append(Garbage(pos, size))

    pos = 0
    n = len(buf)
    while pos < n:
        m = start.search(buf, pos)
        first = m.start() if m else n
        garbage(pos, len(buf[pos:first].strip(_WS)))
        if m is None:
            break
        end = value_end(buf, first)
        out: Any = ijson.sendable_list()
        try:
            if end is None:
                new_parser(out).send(buf[first:])  # unfinished: is it well-formed so far?
                return items, first
            if end != CORRUPT:
                new_parser(out).send(buf[first:end])
                items.extend(out)
                pos = end
                continue
        except _JSONError:
            pass
        garbage(first, 1)
        pos = first + 1
    return items, None
