"""Replies the server writes itself, byte for byte like the agent would.

Everything here is a pure function of its arguments, so the per-request path in
:mod:`qproxy.server.session` stays short: encode once, with one shared encoder.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: A client's request had no ``id``: its reply must have none either.
NO_ID: Final[Any] = object()

_encode = json.JSONEncoder(separators=(", ", ": ")).encode

#: What qemu-ga answers after reading 0xFF: one parse error that carries no id.
STRAY_FF: Final = _encode({"error": {"class": "GenericError",
                                     "desc": "JSON parse error, stray '\ufffd'"}}).encode() + b"\n"


def encode(message: dict[str, Any]) -> bytes:
    """One message as the agent writes it: compact JSON and a newline."""
    return _encode(message).encode() + b"\n"


def with_id(message: dict[str, Any], client_id: Any) -> bytes:
    """``message`` with the client's id put back (or taken away), encoded."""
    if client_id is NO_ID:
        message.pop("id", None)
    else:
        message["id"] = client_id
    return _encode(message).encode() + b"\n"


def error(error_class: str, desc: str, client_id: Any = NO_ID) -> bytes:
    """An error reply, with the client's id when it sent one."""
    message: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
    if client_id is not NO_ID:
        message["id"] = client_id
    return encode(message)


def parse_error(detail: str) -> bytes:
    """The id-less error qemu-ga sends for input it cannot parse."""
    return error("GenericError", f"JSON parse error, {detail}")


def sync_reply(command: str, request: dict[str, Any], client_id: Any) -> bytes | None:
    """The local answer to ``guest-sync``/``guest-sync-delimited``, or ``None``.

    ``None`` means the arguments are not what the agent expects; the request is then
    forwarded so that the agent itself words the error.
    """
    arguments = request.get("arguments")
    if type(arguments) is not dict:
        return None
    sync_id = arguments.get("id")
    if type(sync_id) is not int:
        return None
    message: dict[str, Any] = {"return": sync_id}
    if client_id is not NO_ID:
        message["id"] = client_id
    data = encode(message)
    return b"\xff" + data if command == "guest-sync-delimited" else data


def invalid_request(value: Any) -> bytes:
    """qemu-ga's answer to a JSON value that is not a command."""
    if type(value) is not dict:
        return error("GenericError", "QMP input must be a JSON object")
    client_id = value.get("id", NO_ID)
    if "execute" not in value:
        return error("GenericError", "QMP input lacks member 'execute'", client_id)
    return error("GenericError", "QMP input member 'execute' must be a string", client_id)


def unavailable(desc: str, client_id: Any) -> bytes:
    """A request the server could not get answered: ``GenericError``, ``qproxy: ...``."""
    return error("GenericError", f"qproxy: {desc}", client_id)
