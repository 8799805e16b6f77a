"""``get ACCOUNT [TYPE] --declarations DIR``: an account's effective settings, with the badge."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from controller.commands import common
from controller.core import merging
from controller.files import reconciling

BADGE_GLOBAL = "Using platform defaults"
BADGE_CUSTOM = "Custom settings"


def register(sub: Any) -> None:
    parser = sub.add_parser("get", help="show one account's effective settings")
    parser.add_argument("account", metavar="ACCOUNT", help="the Account's name")
    parser.add_argument(
        "type", nargs="?", metavar="TYPE", help="one integration type (default: all)"
    )
    parser.add_argument(
        "--declarations", "-d", required=True, type=common.existing_dir, metavar="DIR"
    )
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cat = common.load_catalog()
    reconciler = reconciling.Reconciler(cat, args.declarations)
    report = reconciler.run()
    result = next((r for r in reconciler.results.values() if r.account.name == args.account), None)
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
        return 1
    if args.type is not None and args.type not in cat.integrations:
        print(
            f"settings-controller: error: unknown integration type {args.type!r} "
            f"(one of {', '.join(cat.integrations)})",
            file=sys.stderr,
        )
        return 2
    chosen = [i for i in result.integrations if args.type in (None, i.type)]
    common.print_findings(item for item in mine if item.finding.ref is not None)
    if args.output == "table":
        print(_table(result, chosen), end="")
    else:
        docs: Any = {i.type: i.document() for i in chosen}
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


def _table(result: merging.AccountResult, chosen: list[merging.EffectiveIntegration]) -> str:
    lines = []
    account = result.account
    for integration in chosen:
        badge = BADGE_GLOBAL if integration.using_global else BADGE_CUSTOM
        state = "enabled" if integration.enabled else "disabled"
        lines.append(f"{account.name} ({account.plan}) · {integration.type} · {state} · {badge}")
        rows = [("FIELD", "VALUE", "SOURCE")]
        for field, value in integration.values.items():
            source = "account override" if field in integration.overridden else "platform default"
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            rows.append((field, shown, source))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        for field, value, source in rows:
            lines.append(f"  {field:<{widths[0]}}  {value:<{widths[1]}}  {source}".rstrip())
        lines.append("")
    return "\n".join(lines)
