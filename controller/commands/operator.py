"""``operator``: cluster mode, the kopf operator (see ``controller.cluster``).

The flags follow controller-runtime's (kubebuilder's scaffold) where it has one:
bind addresses, secure metrics, leader election and its timings, log level.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
from typing import Any

from controller.commands import common
from controller.core import connections, declarations

DEFAULT_NAMESPACE = "settings-controller-system"

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(value: str) -> float:
    """Seconds from a Go duration (``15s``, ``1m30s``, ``500ms``) or a plain number."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{value!r}: not a duration (e.g. 15s, 1m30s, 500ms)"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0 or seconds > 86400:
        raise argparse.ArgumentTypeError(f"{value!r}: a duration from 1ns to 24h")
    return seconds


def boolean(value: str) -> bool:
    """``--flag=false`` as Go's flag package takes it (true/false, 1/0, t/f)."""
    lowered = value.strip().lower()
    if lowered in ("true", "t", "1", "yes"):
        return True
    if lowered in ("false", "f", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: expected true or false")


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
        default=":8443",
        metavar="HOST:PORT",
        help="where /metrics listens, as controller-runtime's flag: ':8443' every interface, "
        "IPv4 and IPv6 (the default), '127.0.0.1:8443' loopback only, '0' none",
    )
    parser.add_argument(
        "--metrics-secure",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="serve /metrics over HTTPS, only to a bearer token allowed to get /metrics "
        "(TokenReview and SubjectAccessReview; the default); --metrics-secure=false: plain "
        "HTTP to anyone",
    )
    parser.add_argument(
        "--metrics-cert-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="tls.crt and tls.key for /metrics, read again when they change (default: a "
        "self-signed certificate made at start-up)",
    )
    parser.add_argument(
        "--health-probe-bind-address",
        default=":8080",
        metavar="HOST:PORT",
        help="where /healthz (liveness) and /readyz (readiness) listen (default ':8080'; '0' none)",
    )
    parser.add_argument(
        "--leader-elect",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="take the leader Lease before watching and writing, so a second replica stands "
        "by (default true; --leader-elect=false: this replica writes at once)",
    )
    parser.add_argument(
        "--leader-election-id",
        default="settings-controller",
        metavar="NAME",
        help="the Lease's name (default settings-controller)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the Lease's namespace (default: --namespace)",
    )
    parser.add_argument(
        "--leader-elect-lease-duration",
        type=duration,
        default=15.0,
        metavar="DURATION",
        help="how long a standby waits after the last renewal before taking over (default 15s)",
    )
    parser.add_argument(
        "--leader-elect-renew-deadline",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="how long the leader keeps trying to renew before it stops (default 10s; "
        "shorter than the lease duration)",
    )
    parser.add_argument(
        "--leader-elect-retry-period",
        type=duration,
        default=2.0,
        metavar="DURATION",
        help="how often a standby tries to take the Lease (default 2s; shorter than the "
        "renew deadline)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="the least severe log lines shown (default info; -v: debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one object per line (the default); text: one readable line",
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
        "--connection-check-interval",
        type=float,
        default=connections.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="check each platform key against its provider (a connection check) this often, "
        "besides at start, on a key or endpoint change and on the test-connection annotation "
        f"(default {connections.DEFAULT_INTERVAL:.0f}; 0: no checks at all)",
    )
    parser.add_argument(
        "--connection-check-timeout",
        type=float,
        default=connections.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long one connection check may take (default {connections.DEFAULT_TIMEOUT:.0f})",
    )
    # The spellings before "connection check" was the one name, kept (hidden) for existing
    # manifests and charts' extraArgs: the same destination and no default of their own;
    # the last spelling given wins.
    for old, dest in (
        ("--verify-interval", "connection_check_interval"),
        ("--verify-timeout", "connection_check_timeout"),
    ):
        parser.add_argument(
            old, dest=dest, type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--reserved-namespaces",
        metavar="NS,NS,...",
        default=",".join(declarations.RESERVED_NAMESPACES),
        help="namespaces no Account may claim, comma-separated; --namespace is always one "
        f"(default {','.join(declarations.RESERVED_NAMESPACES)})",
    )
    parser.add_argument(
        "--allow-unconfined",
        action="store_true",
        help="start even when the start-up check finds the settings-controller-operator-* "
        "admission policies do not hold this identity (a forbidden dry-run write admitted); "
        "without it the operator refuses to start then (controller/cluster/confinement.py)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: kopf and aiohttp take most of a second to import, which every
    # other subcommand (and `get`, answered in milliseconds) would otherwise pay.
    from controller.cluster import hosting, metrics, operating
    from controller.cluster.runtime import leases

    try:
        metrics_at = metrics.parse_bind_address(args.metrics_bind_address)
        probe_at = metrics.parse_bind_address(args.health_probe_bind_address)
        leases.check_timings(
            args.leader_elect_lease_duration,
            args.leader_elect_renew_deadline,
            args.leader_elect_retry_period,
        )
    except ValueError as e:
        raise common.UsageError(f"operator: {e}") from e
    if args.liveness is not None:
        probe_at = _liveness_url(args.liveness)
    if args.metrics_port is not None:
        metrics_at = (metrics_at[0] if metrics_at else "", args.metrics_port)
    hosting.run(
        operating.Options(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            probe_address=probe_at,
            metrics_address=metrics_at if metrics_at and metrics_at[1] else None,
            metrics_secure=args.metrics_secure,
            metrics_cert_dir=args.metrics_cert_dir,
            election=operating.Election(
                enabled=args.leader_elect,
                name=args.leader_election_id,
                namespace=args.leader_election_namespace,
                duration=args.leader_elect_lease_duration,
                renew_deadline=args.leader_elect_renew_deadline,
                retry=args.leader_elect_retry_period,
            ),
            log_level=args.log_level or ("debug" if args.verbose else "info"),
            log_format=args.log_format,
            concurrency=args.concurrency,
            resync=args.resync,
            keys_timeout=30.0,
            connection_check_interval=args.connection_check_interval,
            connection_check_timeout=args.connection_check_timeout,
            reserved_namespaces=tuple(
                sorted({*filter(None, args.reserved_namespaces.split(",")), args.namespace})
            ),
            allow_unconfined=args.allow_unconfined,
        )
    )
    return 0


def _liveness_url(url: str) -> tuple[str, int] | None:
    """The old ``--liveness http://HOST:PORT/healthz``: its host and port ('' none)."""
    import urllib.parse

    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError as e:
        raise common.UsageError(f"operator: --liveness {url}: {e}") from e
    return (parts.hostname or "", port)
