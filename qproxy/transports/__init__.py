"""Transports: byte streams to an agent, chosen by URL.

>>> from qproxy.transports import transport_for
>>> transport_for("unix:/run/qga.sock")
<UnixTransport unix:/run/qga.sock>
"""

from .base import FdTransport, Transport
from .registry import ENTRY_POINT_GROUP, known_schemes, register, split_url, transport_for

__all__ = [
    "ENTRY_POINT_GROUP",
    "FdTransport",
    "Transport",
    "known_schemes",
    "register",
    "split_url",
    "transport_for",
]
