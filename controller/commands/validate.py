"""``validate PATH...``: schema and semantic checks, ``file:line: message`` per problem."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

import yaml

from controller.commands import common
from controller.core import findings
from controller.files import loading, reconciling


def register(sub: Any) -> None:
    parser = sub.add_parser("validate", help="check declaration files or directories")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "yaml"),
        default="text",
        help="text (file:line: message), or json or yaml for machines",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files: list[str] = []
    missing: list[str] = []
    for raw in args.paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            files.extend(os.path.join(raw, rel) for rel in loading.discover(path))
        elif path.is_file():
            files.append(raw)
        else:
            missing.append(raw)
    report = reconciling.Reconciler(common.load_catalog(), pathlib.Path("."), files=files).run()
    problems = [
        reconciling.Located(
            raw, None, findings.error(findings.Reason.INVALID_YAML, "no such file or directory")
        )
        for raw in missing
    ] + report.findings
    if args.output != "text":
        document = {
            "files": len(files),
            "errors": sum(p.finding.is_error for p in problems),
            "findings": [p.as_dict() for p in problems],
        }
        if args.output == "json":
            print(json.dumps(document, indent=2))
        else:
            print(yaml.safe_dump(document, sort_keys=False), end="")
    else:
        common.print_findings(problems, sys.stdout)
        errors = sum(p.finding.is_error for p in problems)
        print(
            f"{len(files)} file{'s' * (len(files) != 1)} checked, "
            f"{errors} error{'s' * (errors != 1)}",
            file=sys.stderr,
        )
    return 1 if any(p.finding.is_error for p in problems) else 0
