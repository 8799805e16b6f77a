"""``reconcile DIR --output-dir OUT``: one pass of file mode."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import yaml

from controller.commands import common, progress
from controller.files import outputs, reconciling

log = logging.getLogger("settings_controller")

FORMATS = ("json", "yaml")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "reconcile", help="one pass: write the effective settings of every account"
    )
    parser.add_argument(
        "directory", type=common.existing_dir, metavar="DIR", help="declarations"
    ).complete = common.DIRECTORY
    common.add_output_dir(parser, FORMATS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = common.output_dir(args, FORMATS)
    # The catalog is built only if a pass runs: a replay compares its fingerprint.
    reconciler = reconciling.Reconciler(
        common.load_catalog, args.directory, outputs.OutputDir(out), schemas=common.schemas()
    )
    # Nothing changed since the last complete pass: its report, from a stat of every file.
    report = reconciler.replay()
    if report is None:
        with progress.Progress.for_stderr("reconcile") as meter:
            reconciler.progress = meter.update
            report = reconciler.run()
    common.print_findings(report.findings)
    listed = args.verbose or len(report.written) + len(report.removed) <= common.LIST_LIMIT
    for namespace in report.written if listed else ():
        log.info("wrote %s", out / namespace)
    for namespace in report.kept:
        log.warning("kept last good output of %s: see the errors above", namespace)
    for namespace in report.removed if listed else ():
        log.info("removed %s: its account is no longer declared", out / namespace)
    if report.replayed:
        log.info("nothing changed since the last complete pass: its report, without parsing")
    log.info("reconciled %d accounts: %s", report.accounts, common.summary(report))
    if args.output is not None:
        document = {
            "accounts": report.accounts,
            "written": report.written,
            "unchanged": report.unchanged,
            "kept": report.kept,
            "removed": report.removed,
            "errors": len(report.errors),
            "findings": [item.as_dict() for item in report.findings],
            "seconds": round(report.seconds, 3),
        }
        if args.output == "json":
            print(json.dumps(document, indent=2))
        else:
            print(yaml.safe_dump(document, sort_keys=False), end="")
    return report.exit_code
