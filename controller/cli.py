"""``settings-controller``: the command line, one function per subcommand in ``commands/``.

``main`` is the single place where errors become exit codes: 0 fine, 1 errors
reported, 2 usage, 130 interrupted (Ctrl-C), 141 stdout closed early (``| head``),
the codes a shell shows for a tool killed by SIGINT or SIGPIPE.

This module imports only the standard library at its top: the command modules
(jsonschema, aiohttp, kopf's dependencies) take up to a second to import, and
are imported inside ``main``, where Ctrl-C already means a silent 130.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from controller import version

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 130, 141

PROG = "settings-controller"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        from controller.commands import common

        self.print_usage(sys.stderr)
        raise common.UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help and --version end here, their text still in stdout's buffer: a
        # reader that went away (`| head -0`) must show as 141, as for any command.
        sys.stdout.flush()
        super().exit(status, message)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse's own swallows OSError, so a help text larger than the buffer
        # written to a closed pipe would end in exit 0.
        if message:
            (file or sys.stderr).write(message)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from controller.commands import (
        completion,
        connection,
        crds,
        gateway,
        get,
        operator,
        reconcile,
        render,
        validate,
        watch,
    )

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
        connection,
        operator,
        gateway,
    ):
        module.register(sub)
    # Told how to build the parser it completes, so it never imports this module back.
    completion.register(sub, build_parser)
    # `-v` after the subcommand too (`settings-controller watch DIR -v`). SUPPRESS: a
    # subcommand without it leaves the value given before it alone.
    for command in sub.choices.values():
        if not {"-v", "--verbose"} & set(command._option_string_actions):
            command.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                default=argparse.SUPPRESS,
                help="log debug details, one line per account",
            )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        return _main(argv, prog)
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        # Also while the command modules are imported (a Ctrl-C right after a typo).
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None, prog: str) -> int:
    from controller.commands import common
    from controller.core import errors

    # A file name that is not UTF-8 (git stores any bytes) is printed with its odd
    # bytes escaped, as on stderr, rather than failing under a strict UTF-8 locale.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(common.LineFormatter("%(asctime)s %(levelname)s %(message)s"))
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler]
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
        print(common.shown(str(e)), file=sys.stderr)
        return EXIT_USAGE
    except errors.SettingsError as e:
        print(f"{prog}: error: {common.shown(str(e))}", file=sys.stderr)
        return EXIT_ERRORS


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
