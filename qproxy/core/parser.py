"""The one place that makes ijson parsers: the yajl2_c backend, checked on import."""

from __future__ import annotations

import logging
from typing import Any

import ijson

try:
    _BACKEND: Any = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - depends on the installed wheel
    _BACKEND = ijson
    logging.getLogger("qproxy").warning(
        "ijson's yajl2_c backend is missing; decoding falls back to %s and is much slower",
        ijson.backend)

#: The ijson backend in use ("yajl2_c" when all is well).
BACKEND_NAME: str = getattr(_BACKEND, "backend_name", str(getattr(_BACKEND, "backend", "?")))


def new_parser(out: Any) -> Any:
    """A push parser that appends every complete top-level value to ``out``.

    ``out`` is an ``ijson.sendable_list``; feed bytes with ``.send(chunk)``.  After a
    ``JSONError`` the parser is dead: make a new one.
    """
    return _BACKEND.items_coro(out, "", multiple_values=True, use_float=True)
