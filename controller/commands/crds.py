"""``crds``: print the CRDs generated from ``schemas/``, or write them into ``deploy/``."""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Iterable
from typing import Any

import yaml

from controller.cluster import crds, policies
from controller.commands import common
from controller.core import catalog


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
    bodies = [
        yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=100) for d in documents
    ]
    return crds.GENERATED_HEADER + "---\n".join(bodies)


def outputs(cat: catalog.Catalog, args: argparse.Namespace) -> dict[pathlib.Path, str]:
    files: dict[pathlib.Path, str] = {}
    if args.output_dir is not None:
        for name in catalog.KINDS:
            files[args.output_dir / crds.file_name(cat, name)] = render([crds.crd(cat, name)])
    if args.policy_file is not None:
        files[args.policy_file] = render(policies.all_policies(cat))
    return files


def run(args: argparse.Namespace) -> int:
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
                f"{path}: differs from what schemas/ generate; run `settings-controller crds` "
                "with --output-dir/--policy-file to regenerate",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0
