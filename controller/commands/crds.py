"""``crds``: print the CRDs generated from ``schemas/``, or write them into ``deploy/crd``."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import yaml

from controller.cluster import crds
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
        "--check",
        action="store_true",
        help="with --output-dir: write nothing, exit 1 when a file differs from schemas/",
    )
    parser.set_defaults(handler=run)


def render(document: dict[str, Any]) -> str:
    """One CRD as the YAML committed under deploy/crd (stable: same schemas, same bytes)."""
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    return crds.GENERATED_HEADER + body


def run(args: argparse.Namespace) -> int:
    cat = common.load_catalog()
    if args.output_dir is None:
        if args.check:
            raise common.UsageError("crds: --check needs --output-dir")
        sys.stdout.write("---\n".join(render(c) for c in crds.all_crds(cat)))
        return 0
    stale = []
    for name in catalog.KINDS:
        path = args.output_dir / crds.file_name(cat, name)
        text = render(crds.crd(cat, name))
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        args.output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    for path in stale:
        print(
            f"{path}: differs from schemas/; run `settings-controller crds --output-dir "
            f"{args.output_dir}`",
            file=sys.stderr,
        )
    return 1 if stale else 0
