"""Prometheus metrics of the operator.

Each ``Metrics`` has its own registry (tests build several in one process) with
the collectors prometheus_client's default registry carries, so ``process_*``
(resident memory, CPU, open fds), ``python_info`` and ``python_gc_*`` are
served next to the operator's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import prometheus_client as prom

from controller import version

# Outcomes of a namespace's sync that leave its Account's Ready condition False.
_NOT_READY = frozenset({"blocked", "failed"})


class Metrics:
    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = registry or prom.CollectorRegistry()
        r = self.registry
        prom.ProcessCollector(registry=r)
        prom.PlatformCollector(registry=r)
        prom.GCCollector(registry=r)
        prom.Info(
            "settings_controller_build", "The running settings-controller's version.", registry=r
        ).info({"version": version.VERSION})
        self.reconciles = prom.Counter(
            "settings_controller_reconciles_total",
            "Account namespace syncs, by outcome: written (an output changed), unchanged, "
            "blocked (its inputs are in error or in conflict: outputs kept), removed (no "
            "account claims it: outputs removed), failed (a write failed: retried after a "
            "backoff).",
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
            "Failures, by stage: write (an output apply), status (a status patch), keys (the "
            "platform key Secret watch), watch (the watch of generated ConfigMaps and Secrets, "
            "and of labelled namespaces).",
            ["stage"],
            registry=r,
        )
        self.writes = prom.Counter(
            "settings_controller_writes_total",
            "Writes of generated objects, by kind: Namespace (labels applied or removed), "
            "ConfigMap and Secret (server-side applies, and deletions where no account claims "
            "the namespace any more).",
            ["kind"],
            registry=r,
        )
        self.fanout = prom.Histogram(
            "settings_controller_fanout_accounts",
            "Account namespaces queued by one full pass (a global or key change, a periodic "
            "resync).",
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=r,
        )
        self.accounts = prom.Gauge(
            "settings_controller_accounts",
            "Accounts in the operator's index at the last full pass.",
            registry=r,
        )
        self.queue_oldest = prom.Gauge(
            "settings_controller_workqueue_oldest_seconds",
            "How long the namespace waiting longest in the work queue has waited.",
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
        self.queue_depth = prom.Gauge(
            "settings_controller_workqueue_depth",
            "Account namespaces waiting in the work queue (each once; not those being synced).",
            registry=r,
        )
        self._not_ready: set[str] = set()
        self.not_ready = prom.Gauge(
            "settings_controller_accounts_not_ready",
            "Account namespaces whose last sync left them not Ready (blocked or failed).",
            registry=r,
        )
        self.not_ready.set_function(lambda: len(self._not_ready))
        self.last_full_pass = prom.Gauge(
            "settings_controller_last_full_pass_timestamp_seconds",
            "Unix time at which the last full pass over every account finished (0: none yet).",
            registry=r,
        )

    def reconciled(self, account: str, outcome: str) -> None:
        """Count one reconcile and remember whether it left the account Ready."""
        self.reconciles.labels(outcome).inc()
        if outcome in _NOT_READY:
            self._not_ready.add(account)
        else:
            self._not_ready.discard(account)

    def full_pass_done(self) -> None:
        self.last_full_pass.set(time.time())

    def count_queue(self, depth: Callable[[], int], oldest: Callable[[], float]) -> None:
        """Read the work queue's depth and its oldest item's age at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))
        self.queue_oldest.set_function(oldest)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        prom.start_http_server(port, addr=address, registry=self.registry)


def parse_bind_address(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` as controller-runtime takes it: ``:8080`` is every interface, ``0`` off."""
    if value in ("0", ""):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r}: expected HOST:PORT, :PORT or 0")
    return (host.strip("[]") or "0.0.0.0", int(port))
