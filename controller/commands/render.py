"""``render DIR``: the effective ConfigMaps as a YAML stream on stdout.

How GitOps tools consume a generator: ``kubectl apply -f -``, an Argo CD
config-management plugin, a kustomize exec generator all read stdout. Same rule
as ``reconcile``: findings go to stderr and exit 1 when one is an error, while
every account whose inputs are valid is still printed.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from controller.commands import common
from controller.core import catalog, rendering
from controller.files import documents, loading, manifests, reconciling


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "render", help="print the effective ConfigMaps as a YAML stream (for kubectl apply -f -)"
    )
    parser.add_argument(
        "directory", nargs="?", type=common.existing_dir, metavar="DIR", help="declarations"
    ).complete = common.DIRECTORY
    parser.add_argument(
        "--namespaces",
        action="store_true",
        help="also print each account's Namespace, before its ConfigMap",
    )
    parser.add_argument(
        "--generator",
        metavar="FILE",
        help="take DIR from the `declarations:` of a kustomize generator file "
        "(kind SettingsRender), relative to the current directory",
    ).complete = common.FILE
    parser.add_argument(
        "--discover",
        action="store_true",
        help="render nothing: print the files of DIR that declare a GlobalIntegrationSettings "
        "(Argo CD's plugin discovery: output means the directory is ours); exit 0 either way",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if (args.directory is None) == (args.generator is None):
        raise common.UsageError("render: give either DIR or --generator FILE")
    directory = args.directory or _generator_directory(args.generator)
    if args.discover:
        for path in _declaring_the_global(directory):
            sys.stdout.write(f"./{path}\n")
        return 0
    reconciler = reconciling.Reconciler(common.load_catalog(), directory)
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
        out.write("---\n" + manifests.manifest_yaml(manifest))
    return report.exit_code


def _generator_directory(file: str) -> pathlib.Path:
    """The directory a kustomize generator file names in ``declarations:``, read as YAML
    (quoted, commented, flow style: any spelling kustomize itself accepts)."""
    try:
        docs = documents.parse(pathlib.Path(file).read_text(encoding="utf-8"))
    except OSError as e:
        raise common.UsageError(f"render: {file}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise common.UsageError(f"render: {file}: not valid UTF-8") from None
    except documents.DocumentError as e:
        raise common.UsageError(f"render: {file}:{e.line}: {e.message}") from None
    bodies = [d.body for d in docs]
    if len(bodies) != 1 or not isinstance(bodies[0], dict):
        raise common.UsageError(f"render: {file}: must hold one generator object")
    value = bodies[0].get("declarations")
    if not isinstance(value, str) or not value:
        raise common.UsageError(f"render: {file}: `declarations:` must name a directory")
    try:
        return common.existing_dir(value)
    except argparse.ArgumentTypeError as e:
        raise common.UsageError(f"render: {file}: declarations: {e}") from None


def _declaring_the_global(directory: pathlib.Path) -> list[str]:
    """The declaration files under ``directory`` with a document of kind
    GlobalIntegrationSettings, read by the loader ``render`` uses: a directory is claimed
    exactly when ``render`` would find its global there, however the YAML spells it. A
    global that is otherwise invalid still claims it, so the sync fails with its error
    instead of applying the raw declarations."""
    found = []
    for path in loading.discover(directory):
        try:
            docs = documents.parse((directory / path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, documents.DocumentError):
            continue  # render reports it; a file it cannot read declares nothing
        if any(isinstance(d.body, dict) and d.body.get("kind") == catalog.GLOBAL for d in docs):
            found.append(path)
    return found
