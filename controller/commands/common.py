"""What the file-mode subcommands share: the catalog, directory arguments, printing findings."""

from __future__ import annotations

import argparse
import logging
import math
import os
import pathlib
import sys
from collections.abc import Iterable
from typing import TextIO

from controller import schemafiles
from controller.core import catalog
from controller.files import reports

# Completion hints on arguments (``action.complete``), made shtab's by the `completion`
# command (``completion.hinted``): shtab is imported only there, ~20 ms that every
# other command (each builds the parser) need not pay.
FILE, DIRECTORY = "file", "directory"

# Past this many accounts, a pass logs counts instead of a line per account (-v lists them).
LIST_LIMIT = 20


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


def load_catalog() -> catalog.Catalog:
    return schemafiles.load_catalog()


def schemas() -> str:
    """The catalog's fingerprint, without building it (see ``schemafiles.fingerprint``)."""
    return schemafiles.fingerprint()


def existing_dir(value: str) -> pathlib.Path:
    path = pathlib.Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{shown(value)}: not a directory")
    return path


def positive_seconds(value: str) -> float:
    """A duration: a finite number above zero (``nan``, ``inf`` and ``-1`` are usage errors)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be a number of seconds above 0")
    return seconds


def shown(text: str) -> str:
    """``text`` made one printed line: each character Python does not call printable (a
    newline or an escape sequence in a file name, a Unicode line separator, a byte that is
    not UTF-8) as its backslash escape (``\\n``, ``\\x1b``, ``\\u2028``, ``\\udce9``).

    A checkout can name a file ``x\\nother.yaml:1: error: ...``: printed raw, one problem
    would read as two, the second in a file that does not exist, for CI and editors that
    read the output line by line. Every path the CLI prints goes through here: findings,
    error lines, log lines (``LineFormatter``).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class LineFormatter(logging.Formatter):
    """Log records as one line each, through ``shown`` (a traceback appended stays as is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))


def print_findings(found: Iterable[reports.Located], stream: TextIO | None = None) -> None:
    for item in found:
        # The whole line: an object's name in it may be as hostile as a file name.
        print(shown(str(item)), file=stream or sys.stderr)


def summary(report: reports.PassReport) -> str:
    errors = len(report.errors)
    notes = len(report.findings) - errors
    parts = [
        f"{len(report.written)} written",
        f"{report.unchanged} unchanged",
        f"{len(report.kept)} kept (last good)",
        f"{len(report.removed)} removed",
        f"{errors} error{'s' * (errors != 1)}",
        f"{notes} note{'s' * (notes != 1)}",
    ]
    return ", ".join(parts) + f" in {report.seconds * 1000:.1f} ms"


FORMATS = ("table", "json", "yaml")
# Words that are some command's output format: never taken for the deprecated `-o DIR`.
_FORMAT_WORDS = frozenset({*FORMATS, "text", "wide", "name"})


def add_output_dir(parser: argparse.ArgumentParser, formats: tuple[str, ...] = ()) -> None:
    """``--output-dir OUT``, and ``-o/--output`` as an output format (``formats``).

    ``--output OUT`` named the directory before ``-o`` meant a format everywhere;
    scripts and docs still say so, hence ``output_dir`` below.
    """
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        metavar="OUT",
        help="where ConfigMap manifests and JSON files are written",
    )

    def output(value: str) -> str:
        # argparse's own "invalid choice" message, naming the formats: `choices=` cannot
        # be used while a directory is still accepted here.
        if value in _FORMAT_WORDS and value not in formats:
            choices = ", ".join(map(repr, formats)) or "none: this command has no formats"
            raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {choices})")
        return value

    parser.add_argument(
        "-o",
        "--output",
        metavar="FORMAT",
        type=output,
        help=(f"report format: {' or '.join(formats)}; " if formats else "")
        + "a directory here is the deprecated spelling of --output-dir",
    )


def output_dir(args: argparse.Namespace, formats: tuple[str, ...] = ()) -> pathlib.Path:
    """The output directory; moves a directory given as ``--output`` out of ``args.output``."""
    value: str | None = args.output
    if value is not None and value not in formats:
        if value in _FORMAT_WORDS:
            raise UsageError(f"{args.command}: -o {value}: not an output format of this command")
        if args.output_dir is not None:
            raise UsageError(f"{args.command}: --output {value} and --output-dir both given")
        print(
            f"settings-controller: warning: --output OUT is deprecated for {args.command}, "
            f"use --output-dir {value} (-o/--output is an output format)",
            file=sys.stderr,
        )
        args.output, args.output_dir = None, pathlib.Path(value)
    if args.output_dir is None:
        raise UsageError(f"{args.command}: --output-dir OUT is required")
    result: pathlib.Path = args.output_dir
    directory = getattr(args, "directory", None)
    if isinstance(directory, pathlib.Path) and os.path.realpath(result) == os.path.realpath(
        directory
    ):
        # Each namespace's output would sit among the declarations and be read back as one;
        # OUT inside DIR is fine (left out of what is read).
        raise UsageError(f"{args.command}: --output-dir is DIR itself; use a directory of its own")
    return result
