"""qproxy: share one QEMU guest agent between many clients.

>>> import qproxy
>>> with qproxy.connect("unix:/run/qga.sock") as agent:      # doctest: +SKIP
...     agent.call("guest-ping")
"""

from .api import DEFAULT, DEFAULT_TIMEOUT, Agent, connect
from .errors import (
    AgentError,
    AgentReset,
    CallTimeout,
    ChannelClosed,
    ConnectFailed,
    ConnectionLost,
    InvalidURL,
    MessageTooLarge,
    ProtocolError,
    QProxyError,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT",
    "DEFAULT_TIMEOUT",
    "Agent",
    "AgentError",
    "AgentReset",
    "CallTimeout",
    "ChannelClosed",
    "ConnectFailed",
    "ConnectionLost",
    "InvalidURL",
    "MessageTooLarge",
    "ProtocolError",
    "QProxyError",
    "TransportError",
    "__version__",
    "connect",
]
