"""What the file-mode subcommands share: the catalog, directory arguments, printing findings."""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Iterable
from typing import TextIO

from controller import schemafiles
from controller.core import catalog
from controller.files import reconciling

# Past this many accounts, a pass logs counts instead of a line per account (-v lists them).
LIST_LIMIT = 20


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


def load_catalog() -> catalog.Catalog:
    return schemafiles.load_catalog()


def existing_dir(value: str) -> pathlib.Path:
    path = pathlib.Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: not a directory")
    return path


def print_findings(found: Iterable[reconciling.Located], stream: TextIO | None = None) -> None:
    for item in found:
        print(item, file=stream or sys.stderr)


def summary(report: reconciling.PassReport) -> str:
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
    parser.add_argument(
        "-o",
        "--output",
        metavar="FORMAT",
        help=(f"report format: {' or '.join(formats)}; " if formats else "")
        + "a directory here is the deprecated spelling of --output-dir",
    )


def output_dir(args: argparse.Namespace, formats: tuple[str, ...] = ()) -> pathlib.Path:
    """The output directory; moves a directory given as ``--output`` out of ``args.output``."""
    value: str | None = args.output
    if value is not None and value not in formats:
        if value in FORMATS:
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
    return result
