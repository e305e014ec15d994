"""``qproxy agent``: run the reference guest agent (for tests, demos, and trying things)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import gevent

from ..errors import QProxyError

EXAMPLES = """examples:
  qproxy agent --listen unix:/tmp/qga.sock
  qproxy agent --listen tcp:127.0.0.1:4444 --no-echo-ids   # play a very old agent
  qproxy agent --listen unix:/tmp/rfc.sock --xport-2011     # the 2011 RFC's agent
"""


def add_parser(sub: Any) -> None:
    """Register ``agent``."""
    p = sub.add_parser("agent", help="run the reference guest agent",
                       description="Serve a small guest agent (guest-ping, guest-sync, "
                                   "guest-sync-delimited, guest-info, qproxy-echo, "
                                   "qproxy-sleep, qproxy-blob, qproxy-fail, "
                                   "qproxy-noreply).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, metavar="URL",
                   help="where to listen: unix:PATH or tcp:HOST:PORT")
    p.add_argument("--no-echo-ids", action="store_true",
                   help="do not copy request ids into replies (a pre-2012 agent)")
    p.add_argument("--xport-2011", action="store_true",
                   help="speak the 2011 RFC's handshake: guest_init first, nothing until "
                        "host_ack, no ids; qproxy-restart {\"after\": S} plays a restart")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    from ..refagent import ReferenceAgent

    agent = ReferenceAgent(args.listen, echo_ids=not args.no_echo_ids,
                           xport_2011=args.xport_2011)
    try:
        agent.start()
    except (QProxyError, OSError) as exc:
        print(f"qproxy agent: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2
    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    print(f"qproxy agent: listening on {args.listen}", file=sys.stderr, flush=True)
    stop.wait()
    agent.stop()
    return 0
