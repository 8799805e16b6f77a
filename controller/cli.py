"""``settings-controller``: the command line, one function per subcommand in ``commands/``.

``main`` is the single place where errors become exit codes: 0 fine, 1 errors
reported, 2 usage, 130 interrupted (Ctrl-C), 141 stdout closed early (``| head``),
the codes a shell shows for a tool killed by SIGINT or SIGPIPE.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from controller import version
from controller.commands import (
    common,
    completion,
    crds,
    get,
    operator,
    reconcile,
    render,
    test_connection,
    validate,
    watch,
)
from controller.core import errors

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 130, 141

PROG = "settings-controller"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise common.UsageError(f"{self.prog}: {message}")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Merge platform AI-integration defaults with per-account overrides into "
        "one effective settings ConfigMap per account.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version.VERSION}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug details, one line per account"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (
        reconcile,
        watch,
        validate,
        get,
        render,
        crds,
        test_connection,
        operator,
        completion,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
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
        if not args.verbose:
            # The HTTP client logs every request at INFO: `get` from a cluster would
            # print three lines around its table.
            for name in ("httpx2", "httpx"):
                logging.getLogger(name).setLevel(logging.WARNING)
        code: int = args.handler(args)
        # Inside the try: a reader that went away shows up here at the latest.
        sys.stdout.flush()
        return code
    except common.UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except errors.SettingsError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERRORS
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush must not hit the closed pipe
    again (it would print "Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def kubectl_plugin() -> int:
    """``kubectl integrations ...``: kubectl runs ``kubectl-integrations`` with the rest of
    the command line; the same parser, named as the user typed it."""
    return main(prog="kubectl integrations")
