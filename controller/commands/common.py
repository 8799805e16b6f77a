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
