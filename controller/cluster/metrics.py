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

# Outcomes of an account's reconcile that leave its Ready condition False.
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
            "Account reconciles, by outcome: written (an output changed), unchanged, "
            "blocked (its inputs are in error: outputs kept), failed (a write failed: retried), "
            "gone (the Account was deleted).",
            ["outcome"],
            registry=r,
        )
        self.duration = prom.Histogram(
            "settings_controller_reconcile_duration_seconds",
            "Time to reconcile one account, writes included.",
            registry=r,
        )
        self.errors = prom.Counter(
            "settings_controller_errors_total",
            "Failures, by stage: reconcile (an account's reconcile raised), write (an output "
            "apply), status (a status patch), keys (the platform key Secret watch), watch "
            "(the watch of generated ConfigMaps and Secrets).",
            ["stage"],
            registry=r,
        )
        self.writes = prom.Counter(
            "settings_controller_writes_total",
            "Writes of generated objects, by kind: Namespace (created), ConfigMap and Secret "
            "(server-side applies).",
            ["kind"],
            registry=r,
        )
        self.fanout = prom.Histogram(
            "settings_controller_fanout_accounts",
            "Accounts queued by one full pass (a global or key change, a periodic resync).",
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=r,
        )
        self.accounts = prom.Gauge(
            "settings_controller_accounts",
            "Accounts in the operator's index at the last full pass.",
            registry=r,
        )
        self.leader = prom.Gauge(
            "settings_controller_leader",
            "1 while this replica holds the leader Lease, 0 while it stands by.",
            registry=r,
        )
        self.queue_depth = prom.Gauge(
            "settings_controller_workqueue_depth",
            "Accounts waiting in the work queue to be rendered (not those being rendered).",
            registry=r,
        )
        self._not_ready: set[str] = set()
        self.not_ready = prom.Gauge(
            "settings_controller_accounts_not_ready",
            "Accounts whose last reconcile left them not Ready (blocked or failed).",
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

    def count_queue(self, depth: Callable[[], int]) -> None:
        """Read the work queue's depth at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

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
