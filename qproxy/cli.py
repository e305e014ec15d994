"""The ``qproxy`` command line: one sub-command per module in :mod:`qproxy.tools`.

Errors reach people as one line on stderr and an exit code (0 done, 1 the agent said
no, 2 anything else); ``--debug`` adds tracebacks and protocol logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__

#: Sub-command modules; each has ``NAME``, ``add_parser(subparsers)`` and ``run(args)``.
TOOLS = ("call", "serve", "agent", "demo")

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_FAILURE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="qproxy",
        description="Share one QEMU guest agent between many clients, and talk to it by hand.",
        epilog="Agent URLs: unix:PATH, tcp:HOST:PORT, serial:DEVICE, chardev:PATH. "
               "Run 'qproxy COMMAND --help' for examples.")
    parser.add_argument("--version", action="version", version=f"qproxy {__version__}")
    parser.add_argument("-v", "--debug", action="store_true",
                        help="log protocol details and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in TOOLS:
        try:
            module = importlib.import_module(f"qproxy.tools.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"qproxy.tools.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qproxy`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_FAILURE
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
