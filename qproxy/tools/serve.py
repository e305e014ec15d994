"""``qproxy serve``: share one guest agent among many unmodified clients."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import gevent
from gevent.event import Event

from ..core.decoder import DEFAULT_MAX_SIZE
from ..core.handshake import HANDSHAKES
from ..errors import ConnectionLost, QProxyError

EXAMPLES = """examples:
  qproxy serve unix:/run/qga.sock --listen unix:/run/qproxy.sock
  qproxy serve unix:/var/lib/libvirt/qemu/vm1.agent --wait \\
        --listen unix:/run/qproxy-vm1.sock --mode 0660 --listen tcp:127.0.0.1:4444
  qproxy serve unix:/run/qga.sock --listen unix:/run/qga-admin.sock \
        --listen 'unix:/run/qga-monitor.sock?allow=guest-ping,guest-info,guest-get-*' \
        --deny 'guest-set-*'
  echo '{"execute":"guest-ping"}' | socat - UNIX-CONNECT:/run/qproxy.sock

Clients speak the plain guest-agent protocol, exactly as to qemu-ga: each gets its own
replies with its own ids, in the order it sent its requests; guest-sync and
guest-sync-delimited are answered by the server for that client alone.
SIGTERM or SIGINT stops the server: listeners close first, calls in flight get
--grace seconds to finish, then the agent connection closes.
"""


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(raw[-1:], 1)
    try:
        value = int(raw[:-1] if scale != 1 else raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 65536, 64M)") from None
    if value < 64:
        raise argparse.ArgumentTypeError("the size must be at least 64 bytes")
    return value


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode (e.g. 0600)") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range 0000-0777")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_parser(sub: Any) -> None:
    """Register ``serve``."""
    p = sub.add_parser("serve", help="share one agent among many clients",
                       description="Connect to the agent at AGENT_URL and let any number of "
                                   "clients use it through the sockets given with --listen.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("agent", metavar="AGENT_URL",
                   help="the agent: unix:PATH, tcp:HOST:PORT, serial:DEVICE, chardev:PATH")
    p.add_argument("--listen", action="append", required=True, metavar="URL",
                   help="where clients connect: unix:PATH or tcp:[HOST:]PORT (loopback "
                        "unless a HOST is given; port 0 picks one); repeat for several")
    p.add_argument("--mode", type=_mode, default=0o600, metavar="OCTAL",
                   help="permissions of Unix sockets (default 0600)")
    p.add_argument("--allow", action="append", metavar="PATTERNS",
                   help="only these commands (comma-separated shell patterns, e.g. "
                        "'guest-ping,guest-info,guest-get-*'); a listen URL's own "
                        "?allow=... replaces it for that socket")
    p.add_argument("--deny", action="append", metavar="PATTERNS",
                   help="refuse these commands (patterns; denial wins), e.g. "
                        "'guest-exec*,guest-file-*'; adds to a listen URL's ?deny=...")
    p.add_argument("--handshake", choices=HANDSHAKES, default="sync-delimited",
                   help="how to synchronise with the agent on each connection "
                        "(default sync-delimited)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the agent to appear instead of failing at start-up")
    p.add_argument("--connect-timeout", type=_positive, default=10.0, metavar="S",
                   help="seconds to reach the agent at start-up without --wait (default 10)")
    p.add_argument("--max-message-size", type=_size, default=DEFAULT_MAX_SIZE, metavar="BYTES",
                   help="largest request or reply (default 64M); a client that sends more "
                        "gets an error and is disconnected")
    p.add_argument("--max-in-flight", type=int, default=1024, metavar="N",
                   help="requests one client may have in flight before the server stops "
                        "reading from it (default 1024)")
    p.add_argument("--grace", type=_positive, default=5.0, metavar="S",
                   help="seconds calls in flight may finish after SIGTERM (default 5)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log sessions opening and closing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    from ..server import Server

    if not args.quiet:
        logging.getLogger("qproxy.server").setLevel(
            logging.DEBUG if getattr(args, "debug", False) else logging.INFO)
    if args.max_in_flight < 1:
        print("qproxy serve: --max-in-flight must be at least 1", file=sys.stderr)
        return 2
    try:
        server = Server(args.agent, args.listen, mode=args.mode, handshake=args.handshake,
                        allow=args.allow, deny=args.deny or (),
                        wait=args.wait, connect_timeout=args.connect_timeout,
                        max_message_size=args.max_message_size,
                        max_in_flight=args.max_in_flight, grace=args.grace)
    except QProxyError as exc:
        print(f"qproxy serve: {exc}", file=sys.stderr)
        return 2
    stop = Event()

    def on_signal() -> None:
        stop.set()
        if not server.channel.ready:
            server.channel.close()  # interrupts a start-up that waits for the agent

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, on_signal)
    try:
        server.start()
    except QProxyError as exc:
        if stop.is_set():
            return 0
        hint = "" if args.wait or not isinstance(exc, ConnectionLost) else (
            "; use --wait to wait for it")
        print(f"qproxy serve: {exc}{hint}", file=sys.stderr)
        return 2
    print(f"qproxy serve: serving {args.agent} on {', '.join(server.urls)}",
          file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    return 0
