"""``settings-controller``: the command line, one function per subcommand in ``commands/``.

``main`` is the single place where errors become exit codes: 0 fine, 1 errors
reported, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from controller.commands import (
    common,
    crds,
    get,
    operator,
    reconcile,
    test_connection,
    validate,
    watch,
)
from controller.core import errors

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise common.UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="settings-controller",
        description="Merge platform AI-integration defaults with per-account overrides into "
        "one effective settings ConfigMap per account.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (reconcile, watch, validate, get, crds, test_connection, operator):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        code: int = args.handler(args)
        return code
    except common.UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except errors.SettingsError as e:
        print(f"settings-controller: error: {e}", file=sys.stderr)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        return EXIT_OK
