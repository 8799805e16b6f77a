"""``validate PATH... [--global PATH]``: schema and semantic checks, ``file:line: message`` per problem.

A tenant's repository holds IntegrationSettings only: the global and the
Accounts are the platform's. Checked alone, its overrides are screened against
schemas/integrations/ and the key rules, and a note says what needs the
platform's objects (allowedValues, plans, which account owns a namespace); the
absence of those is not an error. ``--global PATH`` brings them in: a
GlobalIntegrationSettings file, or the platform's directory (its Accounts too).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

import yaml

from controller.commands import common
from controller.core import catalog, declarations, findings, screening
from controller.files import loading, reconciling, reports

Reason = findings.Reason


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "validate",
        help="check declaration files or directories",
        description="Check declaration files or directories. Without a GlobalIntegrationSettings "
        "among them (a tenant's repository), overrides are checked against schemas/ only and a "
        "note names what was not checked; that alone is not an error.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument(
        "--global",
        dest="global_path",
        metavar="PATH",
        help="the platform's GlobalIntegrationSettings to check against: a file, or a directory "
        "of the platform's declarations (its Accounts count too); problems in it are reported",
    ).complete = common.FILE
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "yaml"),
        default="text",
        help="text (file:line: message), or json or yaml for machines",
    )
    parser.set_defaults(handler=run)


def _files(
    raw_paths: list[str], seen: set[str] | None = None
) -> tuple[list[str], list[str], dict[str, str | None]]:
    """The files to check, each once: a file reached again through another argument (the
    tree and one of its files, a relative and an absolute spelling, a symlinked checkout)
    is skipped, or its declarations would be reported as declared twice. Within one
    directory, files are kept as ``reconcile`` lists them: a symlink there counts as it
    does in file mode. ``seen``: the real paths already taken (updated)."""
    files: list[str] = []
    # A file found under a directory is read only from inside that directory, as
    # reconcile would; a file named here is read wherever it is, if it is a regular file.
    within: dict[str, str | None] = {}
    missing: list[str] = []
    seen = set() if seen is None else seen
    for raw in raw_paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            found = [os.path.join(raw, rel) for rel in loading.discover(path)]
        elif os.path.lexists(path):  # a FIFO or a device is refused by name, not "missing"
            found = [raw]
        else:
            missing.append(raw)
            continue
        real = {f: os.path.realpath(f) for f in found}
        found = [f for f in found if real[f] not in seen]
        seen.update(real.values())
        files.extend(found)
        within.update(dict.fromkeys(found, raw if path.is_dir() else None))
    return files, missing, within


def run(args: argparse.Namespace) -> int:
    seen: set[str] = set()
    files, missing, within = _files(args.paths, seen)
    if args.global_path is not None:
        added, absent, platform_within = _files([args.global_path], seen)
        if absent:
            raise common.UsageError(f"validate: --global {args.global_path}: no such file")
        files += added
        within.update(platform_within)
    cat = common.load_catalog()
    reconciler = reconciling.Reconciler(cat, pathlib.Path("."), files=files, within=within)
    report = reconciler.run()
    where = " ".join(args.paths)
    problems = [
        reports.Located(raw, None, findings.error(Reason.INVALID_YAML, "no such file or directory"))
        for raw in missing
    ] + _with_platform_context(args, cat, reconciler, report.findings, where)
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


def _with_platform_context(
    args: argparse.Namespace,
    cat: catalog.Catalog,
    reconciler: reconciling.Reconciler,
    found: list[reports.Located],
    where: str,
) -> list[reports.Located]:
    """The pass's findings, read for what the files can decide: without a global or without
    Accounts, the findings that only say so become one note each, and the overrides no
    account rendered are screened here instead of by the merge."""
    decls = [d for loaded in reconciler.loaded.values() for d in loaded.declarations]
    kinds = {_kind(d) for d in decls} | {
        f.ref.kind for loaded in reconciler.loaded.values() for f in loaded.errors if f.ref
    }
    no_global = catalog.GLOBAL not in kinds
    no_account = catalog.ACCOUNT not in kinds
    overrides = [d for d in decls if isinstance(d, declarations.IntegrationSettings)]
    dropped = {Reason.NO_GLOBAL} if no_global and args.global_path is None else set()
    if no_account:
        dropped.add(Reason.ORPHAN_OVERRIDE)
    out = [
        # A finding about the whole set was located at the reconciler's root ".".
        reports.Located(where, None, item.finding) if item.file == "." else item
        for item in found
        if item.finding.reason not in dropped
    ]
    global_ = _the_global(decls)
    for override in overrides:
        itype = cat.integrations.get(override.type)
        if itype is None or override.namespace in reconciler.results:
            continue  # rendered: the merge screened it
        defaults = global_.integrations.get(override.type) if global_ else None
        _, screened = screening.fields(
            cat,
            itype,
            override.overrides,
            defaults.allowed_values if defaults else None,
            override.ref,
            override.source,
        )
        out.extend(reconciler.locate(f) for f in screened)
    out.sort(key=lambda item: (item.file, item.line or 0))
    # What could not be checked comes last, after every problem that could.
    if no_global and args.global_path is not None:
        out.append(
            reports.Located(
                args.global_path,
                None,
                findings.error(Reason.NO_GLOBAL, "no GlobalIntegrationSettings in --global"),
            )
        )
    elif no_global:
        out.append(
            reports.Located(
                where,
                None,
                findings.note(
                    Reason.NO_GLOBAL,
                    "no GlobalIntegrationSettings among the files checked: overrides were "
                    "checked against schemas/ only; allowedValues, plans and which integrations "
                    "are configured were not checked (pass the platform's with --global PATH)",
                ),
            )
        )
    if no_account and overrides:
        out.append(
            reports.Located(
                where,
                None,
                findings.note(
                    Reason.ORPHAN_OVERRIDE,
                    "no Account among the files checked: which account owns each namespace "
                    "and whether its plan may override were not checked (pass the platform's "
                    "declarations with --global DIR)",
                ),
            )
        )
    return out


def _kind(decl: declarations.Declaration) -> str:
    if isinstance(decl, declarations.GlobalSettings):
        return catalog.GLOBAL
    if isinstance(decl, declarations.Account):
        return catalog.ACCOUNT
    return catalog.OVERRIDE


def _the_global(decls: list[declarations.Declaration]) -> declarations.GlobalSettings | None:
    found = [d for d in decls if isinstance(d, declarations.GlobalSettings)]
    return found[0] if len(found) == 1 else None
