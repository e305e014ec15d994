"""``qproxy call``: run one agent command and print its result."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

from ..core.handshake import HANDSHAKES

EXAMPLES = """examples:
  qproxy call unix:/run/qga.sock guest-ping
  qproxy call unix:/run/qproxy.sock guest-info
  qproxy call unix:/run/qproxy.sock guest-exec '{"path": "/bin/uname", "capture-output": true}'
  qproxy call tcp:127.0.0.1:4444 guest-get-osinfo --timeout 5

The command's "return" value is printed as JSON on stdout.
exit codes:
  0  the agent answered
  1  the agent answered with an error (printed as CLASS: desc on stderr)
  2  anything else: no connection, a timeout, a malformed URL or malformed arguments
"""

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_FAILURE = 2


def add_parser(sub: Any) -> None:
    """Register ``call``."""
    p = sub.add_parser("call", help="run one agent command and print its result",
                       description="Connect to the agent (or to a qproxy serve socket), run "
                                   "COMMAND with ARGUMENTS_JSON and print its return value.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("agent", metavar="AGENT_URL",
                   help="unix:PATH, tcp:HOST:PORT, serial:DEVICE, chardev:PATH")
    p.add_argument("execute", metavar="COMMAND", help="the command, e.g. guest-ping")
    p.add_argument("arguments", metavar="ARGUMENTS_JSON", nargs="?",
                   help="the command's arguments as a JSON object, e.g. '{\"id\": 1}'")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the connection, and then for the reply "
                        "(default 30)")
    p.add_argument("--handshake", choices=HANDSHAKES, default="sync-delimited",
                   help="how to synchronise with the agent first (default sync-delimited)")
    p.add_argument("--compact", action="store_true", help="print the result on one line")
    p.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"qproxy call: {message}", file=sys.stderr)
    return EXIT_FAILURE


def run(args: argparse.Namespace) -> int:
    """Run the command; return the exit code."""
    from ..api import connect
    from ..errors import AgentError, CallTimeout, QProxyError

    debug = bool(getattr(args, "debug", False))
    arguments: dict[str, Any] | None = None
    if args.arguments is not None:
        try:
            parsed = json.loads(args.arguments)
        except ValueError as exc:
            return _fail(f"ARGUMENTS_JSON is not valid JSON ({exc}); "
                         "e.g. '{\"path\": \"/etc/hostname\"}'")
        if not isinstance(parsed, dict):
            return _fail(f"ARGUMENTS_JSON must be a JSON object, not {type(parsed).__name__}; "
                         "e.g. '{\"id\": 1}'")
        arguments = parsed
    if not args.timeout > 0:
        return _fail("--timeout must be more than 0 seconds")
    try:
        with connect(args.agent, timeout=args.timeout, default_timeout=args.timeout,
                     handshake=args.handshake, reconnect=False) as agent:
            result = agent.call(args.execute, arguments)
    except AgentError as exc:
        if debug:
            traceback.print_exc()
        print(f"{exc.error_class}: {exc.desc}", file=sys.stderr)
        return EXIT_AGENT_ERROR
    except CallTimeout as exc:
        if debug:
            traceback.print_exc()
        return _fail(str(exc))
    except QProxyError as exc:
        if debug:
            traceback.print_exc()
        return _fail(str(exc))
    except Exception as exc:  # a bug: still one line, details with --debug
        if debug:
            traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)")
    json.dump(result, sys.stdout, indent=None if args.compact else 2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return EXIT_OK
