"""Prometheus metrics of the operator, on their own registry and port."""

from __future__ import annotations

import prometheus_client as prom


class Metrics:
    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = registry or prom.CollectorRegistry()
        r = self.registry
        self.reconciles = prom.Counter(
            "settings_controller_reconciles_total",
            "Namespace syncs, by outcome (written, unchanged, blocked, removed).",
            ["outcome"],
            registry=r,
        )
        self.duration = prom.Histogram(
            "settings_controller_reconcile_duration_seconds",
            "Time to sync one account namespace, writes included.",
            registry=r,
        )
        self.errors = prom.Counter(
            "settings_controller_errors_total",
            "Failures, by stage (write, status, keys, watch).",
            ["stage"],
            registry=r,
        )
        self.writes = prom.Counter(
            "settings_controller_writes_total",
            "Server-side applies of generated objects, by kind.",
            ["kind"],
            registry=r,
        )
        self.fanout = prom.Histogram(
            "settings_controller_fanout_accounts",
            "Accounts re-rendered by one fan-out (a global or key change, a resync).",
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=r,
        )
        self.accounts = prom.Gauge(
            "settings_controller_accounts", "Accounts in the operator's index.", registry=r
        )
        self.queue_depth = prom.Gauge(
            "settings_controller_workqueue_depth",
            "Account namespaces waiting for a worker (each counted once).",
            registry=r,
        )
        self.retries = prom.Counter(
            "settings_controller_workqueue_retries_total",
            "Namespaces queued again after a failure (per-namespace backoff, shared rate limit).",
            registry=r,
        )
        self.leader = prom.Gauge(
            "settings_controller_leader",
            "1 while this replica holds the leader Lease, 0 while it stands by.",
            registry=r,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        prom.start_http_server(port, addr=address, registry=self.registry)
