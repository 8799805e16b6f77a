"""``crds``: print the CRDs generated from ``schemas/``, or write them into ``deploy/``."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Iterable
from typing import Any

import yaml

from controller.commands import common
from controller.core import catalog, errors


def register(sub: Any) -> None:
    parser = sub.add_parser("crds", help="print the CustomResourceDefinitions made from schemas/")
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="write one file per kind into DIR (deploy/crd) instead of printing",
    )
    parser.add_argument(
        "--policy-file",
        type=pathlib.Path,
        metavar="FILE",
        help="also write the admission policies generated from schemas/ "
        "(deploy/policy/generated.yaml)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when a file differs from what schemas/ generate",
    )
    parser.set_defaults(handler=run)


def render(documents: Iterable[dict[str, Any]]) -> str:
    """Documents as the YAML committed under deploy/ (stable: same schemas, same bytes)."""
    # The generators are imported where used (here and below): jsonschema, which they
    # import, is ~70 ms that every other command (each builds the parser) need not pay.
    from controller.generators import crds

    bodies = [
        yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=100) for d in documents
    ]
    return crds.GENERATED_HEADER + "---\n".join(bodies)


def outputs(cat: catalog.Catalog, args: argparse.Namespace) -> dict[pathlib.Path, str]:
    from controller.generators import crds, policies

    files: dict[pathlib.Path, str] = {}
    if args.output_dir is not None:
        for name in catalog.KINDS:
            files[args.output_dir / crds.file_name(cat, name)] = render([crds.crd(cat, name)])
    if args.policy_file is not None:
        files[args.policy_file] = render(policies.all_policies(cat))
    return files


def run(args: argparse.Namespace) -> int:
    from controller.generators import crds

    cat = common.load_catalog()
    files = outputs(cat, args)
    if not files:
        if args.check:
            raise common.UsageError("crds: --check needs --output-dir or --policy-file")
        sys.stdout.write(render(crds.all_crds(cat)))
        return 0
    stale = [
        path
        for path, text in files.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    if args.check:
        for path in stale:
            print(
                f"{common.shown(str(path))}: differs from what schemas/ generate; run `settings-controller crds` "
                "with --output-dir/--policy-file to regenerate",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path], encoding="utf-8")
        except OSError as e:
            raise errors.SettingsError(_cannot_write(path, e)) from None
        print(f"wrote {common.shown(str(path))}", file=sys.stderr)
    return 0


def _cannot_write(path: pathlib.Path, error: OSError) -> str:
    """One line naming the file and why: a file where the directory was expected (a typo in
    ``--output-dir``) is the likely one."""
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        culprit = next((p for p in path.parents if os.path.lexists(p)), path.parent)
        return f"cannot write {path}: {culprit} is not a directory"
    return f"cannot write {path}: {error.strerror or error}"
