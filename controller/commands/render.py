"""``render DIR``: the effective ConfigMaps as a YAML stream on stdout.

How GitOps tools consume a generator: ``kubectl apply -f -``, an Argo CD
config-management plugin, a kustomize exec generator all read stdout. Same rule
as ``reconcile``: findings go to stderr and exit 1 when one is an error, while
every account whose inputs are valid is still printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import shtab

from controller.commands import common
from controller.core import rendering
from controller.files import outputs, reconciling


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "render", help="print the effective ConfigMaps as a YAML stream (for kubectl apply -f -)"
    )
    parser.add_argument(
        "directory", type=common.existing_dir, metavar="DIR", help="declarations"
    ).complete = shtab.DIRECTORY
    parser.add_argument(
        "--namespaces",
        action="store_true",
        help="also print each account's Namespace, before its ConfigMap",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reconciler = reconciling.Reconciler(common.load_catalog(), args.directory)
    report = reconciler.run()
    common.print_findings(report.findings)
    out = sys.stdout
    for namespace in sorted(reconciler.results):
        if namespace in reconciler.protected:
            continue  # its inputs have errors: what it would get is not known
        result = reconciler.results[namespace]
        if args.namespaces:
            out.write(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
        manifest = rendering.configmap(result.account.name, namespace, result.data)
        out.write("---\n" + outputs.manifest_yaml(manifest))
    return report.exit_code
