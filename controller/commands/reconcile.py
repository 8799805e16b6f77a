"""``reconcile DIR --output OUT``: one pass of file mode."""

from __future__ import annotations

import argparse
import logging
import pathlib
from typing import Any

from controller.commands import common
from controller.files import outputs, reconciling

log = logging.getLogger("settings_controller")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "reconcile", help="one pass: write the effective settings of every account"
    )
    parser.add_argument("directory", type=common.existing_dir, metavar="DIR", help="declarations")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=pathlib.Path,
        metavar="OUT",
        help="where ConfigMap manifests and JSON files are written",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reconciler = reconciling.Reconciler(
        common.load_catalog(), args.directory, outputs.OutputDir(args.output)
    )
    report = reconciler.run()
    common.print_findings(report.findings)
    for namespace in report.written:
        log.info("wrote %s", args.output / namespace)
    for namespace in report.kept:
        log.warning("kept last good output of %s: its declarations have errors", namespace)
    for namespace in report.removed:
        log.info("removed %s: its account is no longer declared", args.output / namespace)
    log.info("reconciled %d accounts: %s", len(reconciler.results), common.summary(report))
    return report.exit_code
