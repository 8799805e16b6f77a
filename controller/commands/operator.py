"""``operator``: cluster mode, the kopf operator (see ``controller.cluster``)."""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Any

from controller.cluster import connections, handlers, running

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
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default http://0.0.0.0:8080/healthz; '' for none)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus port (0: none; default 9090)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="accounts rendered at once (default 16)"
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    running.run(
        running.Options(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            liveness=args.liveness or None,
            metrics_port=args.metrics_port,
            concurrency=args.concurrency,
            resync=args.resync,
            keys_timeout=30.0,
            verbose=args.verbose,
            verify_interval=args.verify_interval,
            verify_timeout=args.verify_timeout,
        ),
        handlers.registry,
    )
    return 0
