"""``get ACCOUNT [TYPE]``: an account's effective settings, with the badge and each field's source.

From declarations (``-d DIR``, fast with the record of ``--output-dir OUT``) or
from a cluster (the default, as ``kubectl`` would: ``--kubeconfig``, else
``$KUBECONFIG``); the same table either way.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import TYPE_CHECKING, Any

import yaml

from controller.commands import common
from controller.core import catalog, merging

if TYPE_CHECKING:
    # Imported where used: the cluster client is ~20 ms that every other command
    # (each builds the parser, which imports this module) need not pay.
    from controller.commands import views


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "get",
        help="show one account's effective settings",
        description="Show one account's effective settings: from declarations with -d DIR, "
        "else from the cluster of --kubeconfig (default $KUBECONFIG, ~/.kube/config).",
    )
    parser.add_argument("account", metavar="ACCOUNT", help="the Account's name")
    parser.add_argument(
        "type", nargs="?", metavar="TYPE", help="one integration type (default: all)"
    )
    parser.add_argument(
        "--declarations",
        "-d",
        type=common.existing_dir,
        metavar="DIR",
        help="read declarations under DIR instead of a cluster",
    ).complete = common.DIRECTORY
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        metavar="OUT",
        help="with -d: read only the files that fed the account in the last pass writing OUT "
        "(files added since are not seen)",
    ).complete = common.DIRECTORY
    # The flags a krew-style kubectl plugin is called with, as kubectl spells them.
    cluster = parser.add_argument_group("cluster (without -d)")
    cluster.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        metavar="FILE",
        help="the cluster to read (default: $KUBECONFIG, else ~/.kube/config)",
    ).complete = common.FILE
    cluster.add_argument(
        "--context", metavar="NAME", help="the kubeconfig context to use (default: its current)"
    )
    cluster.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        help="the account's namespace: an Account is cluster-scoped, so this is a check that "
        "ACCOUNT renders into NAMESPACE (an error otherwise), not where it is looked up",
    )
    parser.add_argument("-o", "--output", choices=common.FORMATS, default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cat = common.load_catalog()
    if args.type is not None:
        # Either spelling: the type (image_generation) or its objects' name (image-generation).
        chosen = cat.type_for_object_name(args.type)
        if chosen is None:
            spellings = ", ".join(
                t.name if t.name == t.object_name else f"{t.name} ({t.object_name})"
                for t in cat.integrations.values()
            )
            print(
                f"settings-controller: error: unknown integration type {args.type!r} "
                f"(one of {spellings})",
                file=sys.stderr,
            )
            return 2
        args.type = chosen
    from controller.commands import views

    if args.declarations is None:
        if args.output_dir is not None:
            raise common.UsageError("get: --output-dir needs -d DIR")
        try:
            view = views.from_cluster(args.kubeconfig, args.account, args.context)
        except views.NotFound as e:
            print(f"settings-controller: error: {e}", file=sys.stderr)
            return 1
        if args.namespace is not None and args.namespace != view.namespace:
            print(
                f"settings-controller: error: account {args.account!r} renders into namespace "
                f"{view.namespace!r}, not {args.namespace!r} (an Account is cluster-scoped; "
                "-n only checks its namespace)",
                file=sys.stderr,
            )
            return 1
    else:
        for flag, value in (
            ("--kubeconfig", args.kubeconfig),
            ("--context", args.context),
            ("-n/--namespace", args.namespace),
        ):
            if value is not None:
                raise common.UsageError(f"get: {flag} reads a cluster; not with -d DIR")
        found = _from_declarations(args, cat)
        if found is None:
            return 1
        view = found
    return _show(args, cat, view)


def _from_declarations(args: argparse.Namespace, cat: catalog.Catalog) -> views.AccountView | None:
    from controller.commands import views

    reconciler, report, result = views.from_declarations(
        cat, args.declarations, args.account, args.output_dir
    )
    mine = [
        item
        for item in report.findings
        if result is None
        or item.finding.ref is None
        or item.finding.ref.name == args.account
        or item.finding.ref.namespace == result.account.namespace
    ]
    if result is None or result.account.namespace in reconciler.protected:
        common.print_findings(mine)
        print(
            f"settings-controller: error: account {args.account!r} not found or not renderable "
            f"in {args.declarations}",
            file=sys.stderr,
        )
        return None
    common.print_findings(item for item in mine if item.finding.ref is not None)
    return views.from_result(result)


def _show(args: argparse.Namespace, cat: catalog.Catalog, view: views.AccountView) -> int:
    chosen = [i for i in view.integrations if args.type in (None, i.type)]
    if args.output == "table":
        print(_table(cat, view, chosen), end="")
    else:
        docs: Any = {i.type: dict(i.document) for i in chosen}
        if args.type is not None:
            docs = docs.get(args.type, {})
        if args.output == "json":
            print(json.dumps(docs, indent=2, sort_keys=True))
        else:
            print(yaml.safe_dump(docs, sort_keys=True), end="")
    if args.type is not None and not chosen:
        print(
            f"settings-controller: error: integration {args.type!r} is not configured "
            "in GlobalIntegrationSettings",
            file=sys.stderr,
        )
        return 1
    return 0


def _table(cat: catalog.Catalog, view: views.AccountView, chosen: list[views.Integration]) -> str:
    lines = []
    for integration in chosen:
        badge = merging.BADGE_GLOBAL if integration.using_global else merging.BADGE_CUSTOM
        state = "enabled" if integration.enabled else "disabled"
        lines.append(f"{view.name} ({view.plan}) · {integration.type} · {state} · {badge}")
        rows = [("FIELD", "VALUE", "SOURCE")]
        for field, value in integration.values(cat):
            source = "account override" if field in integration.overridden else "platform default"
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            rows.append((field, shown, source))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        for field, value, source in rows:
            lines.append(f"  {field:<{widths[0]}}  {value:<{widths[1]}}  {source}".rstrip())
        lines.append("")
    if view.statuses:
        lines.extend(["STATUS", *(f"  {line}" for line in view.statuses), ""])
    return "\n".join(lines)
