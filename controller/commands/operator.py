"""``operator``: cluster mode, the kopf operator (see ``controller.cluster``)."""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Any

from controller.commands import common
from controller.core import connections, declarations

DEFAULT_NAMESPACE = "settings-controller-system"


def register(sub: Any) -> None:
    parser = sub.add_parser("operator", help="run cluster mode (a kopf operator)")
    parser.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        metavar="FILE",
        help="kubeconfig to use (default: in-cluster ServiceAccount, else $KUBECONFIG)",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
        help="namespace of the platform key Secrets (default: $POD_NAMESPACE or "
        f"{DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--metrics-bind-address",
        default=":9090",
        metavar="HOST:PORT",
        help="where /metrics listens, as controller-runtime's flag: ':9090' every interface "
        "(the default), '127.0.0.1:9090' loopback only, '0' none",
    )
    parser.add_argument(
        "--health-probe-bind-address",
        default=":8080",
        metavar="HOST:PORT",
        help="where the liveness probe /healthz listens (default ':8080'; '0' none)",
    )
    # The spellings before the bind addresses, kept for existing manifests.
    parser.add_argument("--liveness", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="accounts rendered at once, each writing its ConfigMap and Secret together (default 16)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="full pass this often, to catch anything missed (default 300)",
    )
    parser.add_argument(
        "--verify-interval",
        type=float,
        default=connections.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="check the platform keys against their providers this often, besides at start, "
        "on a key or endpoint change and on the test-connection annotation "
        f"(default {connections.DEFAULT_INTERVAL:.0f}; 0: no checks at all)",
    )
    parser.add_argument(
        "--verify-timeout",
        type=float,
        default=connections.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long one key check may take (default {connections.DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--reserved-namespaces",
        metavar="NS,NS,...",
        default=",".join(declarations.RESERVED_NAMESPACES),
        help="namespaces no Account may claim, comma-separated; --namespace is always one "
        f"(default {','.join(declarations.RESERVED_NAMESPACES)})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: kopf and aiohttp take most of a second to import, which every
    # other subcommand (and `get`, answered in milliseconds) would otherwise pay.
    from controller.cluster import handlers, metrics, running

    try:
        metrics_at = metrics.parse_bind_address(args.metrics_bind_address)
        probe_at = metrics.parse_bind_address(args.health_probe_bind_address)
    except ValueError as e:
        raise common.UsageError(f"operator: {e}") from e
    liveness = f"http://{probe_at[0]}:{probe_at[1]}/healthz" if probe_at else None
    if args.liveness is not None:
        liveness = args.liveness or None
    if args.metrics_port is not None:
        metrics_at = (metrics_at[0] if metrics_at else "0.0.0.0", args.metrics_port)
    running.run(
        running.Options(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            liveness=liveness,
            metrics_port=metrics_at[1] if metrics_at else 0,
            metrics_address=metrics_at[0] if metrics_at else "",
            concurrency=args.concurrency,
            resync=args.resync,
            keys_timeout=30.0,
            verbose=args.verbose,
            verify_interval=args.verify_interval,
            verify_timeout=args.verify_timeout,
            reserved_namespaces=tuple(
                sorted({*filter(None, args.reserved_namespaces.split(",")), args.namespace})
            ),
        ),
        handlers.registry,
    )
    return 0
