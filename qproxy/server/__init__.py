"""``qproxy serve``: many unmodified clients share one guest agent.

* :mod:`.server` -- :class:`Server`: listeners, sessions, orderly shutdown;
* :mod:`.session` -- :class:`Session`: one client, its requests forwarded in order;
* :mod:`.listener` -- binding Unix and TCP sockets (modes, stale socket files);
* :mod:`.replies` -- the replies the server words itself, as the agent would.
"""

from .listener import Listener, ListenError, bind
from .server import DEFAULT_GRACE, Server
from .session import Session

__all__ = ["DEFAULT_GRACE", "ListenError", "Listener", "Server", "Session", "bind"]
