"""``test-connection PATH (--keys-dir DIR | --keys-from-env)``: the seed's "test connection".

Checks every key the global in PATH references against its provider and prints
one row per key with the same reasons the operator writes to
``status.connections``. Exit 0 only when every key is connected.

The command keeps its published name, ``test-connection`` (the seed's "test connection"
button, and the annotation that asks the operator for the same): a connection check.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pathlib
import re
import sys
import urllib.parse
from typing import Any

import yaml

from controller.commands import common
from controller.core import catalog, connections, declarations
from controller.files import loading

ENV_PREFIX = "SETTINGS_CONTROLLER_KEY_"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "test-connection",
        help="check the platform keys of a global against their providers",
        description="Check every key the GlobalIntegrationSettings in PATH references against "
        "its provider (the credential's endpoint, else the provider's public URL). Requests "
        "honour HTTPS_PROXY, HTTP_PROXY and NO_PROXY. Exit 0 only when every key is connected.",
    )
    parser.add_argument("path", type=pathlib.Path, metavar="PATH", help="a file or directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--keys-dir",
        type=common.existing_dir,
        metavar="DIR",
        help="key values laid out like a mounted Secret: DIR/<key>, or DIR/<secretName>/<key> "
        "when the global references several Secrets",
    )
    source.add_argument(
        "--keys-from-env",
        action="store_true",
        help=f"key values from {ENV_PREFIX}<KEY> (the key's name upper-cased, other characters "
        "as _), e.g. SETTINGS_CONTROLLER_KEY_OPENAI",
    )
    parser.add_argument(
        "--timeout",
        type=common.positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="per check (default 10)",
    )
    parser.add_argument(
        "--allow-insecure-endpoint",
        action="store_true",
        help="send keys to a plain http:// endpoint on another host too (refused by default: "
        "the key would cross the network unencrypted); loopback is always allowed, with a warning",
    )
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.set_defaults(handler=run)


INSECURE = "plain http: the key is sent unencrypted"


def _plain_http(target: connections.Target) -> bool:
    return urllib.parse.urlsplit(target.endpoint).scheme.lower() == "http"


def _loopback(target: connections.Target) -> bool:
    host = urllib.parse.urlsplit(target.endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _insecure(args: argparse.Namespace, targets: list[connections.Target]) -> set[str] | None:
    """The names of the targets reached over plain http, each warned about on stderr; None
    (after one error line each) when one is on another host and not allowed."""
    plain = [t for t in targets if _plain_http(t)]
    refused = [t for t in plain if not _loopback(t)]
    if refused and not args.allow_insecure_endpoint:
        for t in refused:
            print(
                f"settings-controller: error: {t.name}: "
                f"{connections.printable_endpoint(t.endpoint)} is {INSECURE.split(':')[0]}: "
                "its key would cross the network unencrypted; use https, or pass "
                "--allow-insecure-endpoint to send it anyway",
                file=sys.stderr,
            )
        return None
    for t in plain:
        print(
            f"settings-controller: warning: {t.name}: "
            f"{connections.printable_endpoint(t.endpoint)}: {INSECURE}",
            file=sys.stderr,
        )
    return {t.name for t in plain}


def env_name(key: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def _key_reader(args: argparse.Namespace) -> Any:
    def from_dir(target: connections.Target) -> str | None:
        root: pathlib.Path = args.keys_dir
        for path in (root / target.secret_name / target.key, root / target.key):
            if path.is_file():
                return path.read_text(encoding="utf-8").strip() or None
        return None

    def from_env(target: connections.Target) -> str | None:
        return os.environ.get(env_name(target.key), "").strip() or None

    return from_dir if args.keys_dir is not None else from_env


def _global(cat: catalog.Catalog, path: pathlib.Path) -> declarations.GlobalSettings | None:
    within: str | None
    if path.is_dir():
        root, files, within = path, loading.discover(path), str(path)
    elif path.is_file():
        root, files, within = path.parent, [path.name], None  # named here: read where it is
    else:
        raise common.UsageError(f"settings-controller test-connection: {path}: no such file")
    found = []
    for rel in files:
        loaded = loading.load_file(cat, root, rel, within)
        for finding in loaded.errors:
            print(f"{common.shown(str(root / rel))}: error: {finding.message}", file=sys.stderr)
        found += [d for d in loaded.declarations if isinstance(d, declarations.GlobalSettings)]
    return found[0] if len(found) == 1 else None


def run(args: argparse.Namespace) -> int:
    cat = common.load_catalog()
    global_ = _global(cat, args.path)
    if global_ is None:
        print(
            "settings-controller: error: no single valid GlobalIntegrationSettings in "
            f"{common.shown(str(args.path))}",
            file=sys.stderr,
        )
        return 1
    targets = connections.targets(cat, global_)
    insecure = _insecure(args, targets)
    if insecure is None:
        return 2
    # Imported here: the provider client (aiohttp, its TLS context) and asyncio are a
    # tenth of a second that every other command, `reconcile` with nothing changed
    # above all, need not pay (each builds the parser, which imports this module).
    import asyncio

    from controller.providers import connections as provider_connections

    outcomes = asyncio.run(
        provider_connections.check_all(targets, _key_reader(args), timeout=args.timeout)
    )
    verdict = connections.verdict(outcomes)
    entries = [
        {**o.entry(), "warning": INSECURE} if o.target.name in insecure else o.entry()
        for o in outcomes
    ]
    if args.output == "json":
        print(json.dumps({"connected": verdict.status == "True", "connections": entries}, indent=2))
    elif args.output == "yaml":
        print(
            yaml.safe_dump(
                {"connected": verdict.status == "True", "connections": entries}, sort_keys=False
            ),
            end="",
        )
    else:
        _table(entries)
        bad = sum(not e["connected"] for e in entries)
        print(f"{len(entries)} keys checked, {bad} not connected")
    return 0 if verdict.status == "True" else 1


def _table(entries: list[dict[str, Any]]) -> None:
    # A WARNING column only when a row has one: the usual table stays as it was.
    warned = any("warning" in e for e in entries)
    header: tuple[str, ...] = ("INTEGRATION", "CREDENTIAL", "CONNECTED", "REASON", "LATENCY")
    header += ("ENDPOINT", *(("WARNING",) if warned else ()))
    rows = [
        (
            e["integration"],
            e["credential"],
            str(e["connected"]).lower(),
            e["reason"],
            f"{e['latencyMilliseconds']}ms",
            e["endpoint"],
            *((e.get("warning", ""),) if warned else ()),
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
