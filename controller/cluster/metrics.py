"""Prometheus metrics of the operator.

Each ``Metrics`` has its own registry (tests build several in one process) with
the collectors prometheus_client's default registry carries, so ``process_*``
(resident memory, CPU, open fds), ``python_info`` and ``python_gc_*`` are
served next to the operator's own. Besides the domain ``settings_controller_*``
series, the work queue, the reconciles, the API requests and the Lease are also
counted under controller-runtime's and client-go's names (``workqueue_*``,
``controller_runtime_*``, ``rest_client_requests_total``,
``leader_election_master_status``), so stock controller dashboards and alerts
read them unchanged. The HTTP side (TLS, the TokenReview and
SubjectAccessReview filter) is ``serving``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import prometheus_client as prom

from controller import version

# Outcomes of a namespace's sync that leave its Account's Ready condition False.
_NOT_READY = frozenset({"blocked", "failed"})


class Metrics:
    def __init__(
        self,
        registry: prom.CollectorRegistry | None = None,
        lease_name: str = "settings-controller",
    ) -> None:
        self.registry = registry or prom.CollectorRegistry()
        self.lease_name = lease_name
        # The labelled children counted per sync or per request, each looked up once
        # (``_child``): ``labels()`` takes a lock and builds a key per call, ~3 % of the
        # operator's CPU in a fan-out (tests/bench --profile). Bound on first use, so a
        # series appears when it is first counted, as before.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self._standard(r)
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
        self.events = prom.Counter(
            "settings_controller_events_total",
            "Events posted, by outcome: created (a new Event object), aggregated (the count "
            "of an existing one patched), suppressed (no token left in the object's bucket: "
            "25, then one every 5 minutes, as client-go's correlator).",
            ["outcome"],
            registry=r,
        )
        self.confined = prom.Gauge(
            "settings_controller_confined",
            "1 when the start-up check proved the admission policies hold the operator's "
            "identity (forbidden dry-run writes refused), 0 when it runs unconfined "
            "(--allow-unconfined).",
            registry=r,
        )
        self._not_ready: set[str] = set()  # blocked or failed
        self._keys_missing: set[str] = set()  # written, but a platform key they use is missing
        self.not_ready = prom.Gauge(
            "settings_controller_accounts_not_ready",
            "Account namespaces whose last sync left them not Ready: blocked, failed, or "
            "written without a platform key they need (KeysMissing).",
            registry=r,
        )
        self.not_ready.set_function(lambda: len(self._not_ready | self._keys_missing))
        self.last_full_pass = prom.Gauge(
            "settings_controller_last_full_pass_timestamp_seconds",
            "Unix time at which the last full pass over every account finished (0: none yet).",
            registry=r,
        )

    def reconciled(self, account: str, outcome: str) -> None:
        """Count one reconcile and remember whether it left the account Ready."""
        self._child(self.reconciles, outcome).inc()
        if outcome in _NOT_READY:
            self._not_ready.add(account)
        else:
            self._not_ready.discard(account)
        if outcome == "removed":
            self._keys_missing.discard(account)

    def keys_missing(self, account: str, missing: bool) -> None:
        """Whether the account's outputs were written without a platform key they use: its
        Ready condition is then False (KeysMissing) although the sync succeeded."""
        if missing:
            self._keys_missing.add(account)
        else:
            self._keys_missing.discard(account)

    def full_pass_done(self) -> None:
        self.last_full_pass.set(time.time())

    def count_queue(self, depth: Callable[[], int], oldest: Callable[[], float]) -> None:
        """Read the work queue's depth and its oldest item's age at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))
        self.queue_oldest.set_function(oldest)

    def leading(self, leader: bool) -> None:
        """This replica took (True) or lost (False) the Lease, or stands by (False)."""
        self.leader.set(int(leader))
        self.master_status.labels(self.lease_name).set(int(leader))

    def queue(self, name: str, workers: int) -> QueueMeter:
        """The controller-runtime series of the work queue and controller ``name``."""
        self.max_concurrent.labels(name).set(workers)
        self.active_workers.labels(name).set(0)
        return QueueMeter(self, name)

    def rest_request(self, code: int, method: str, host: str) -> None:
        """One API request's answer (client-go's rest_client_requests_total): its status
        code, or ``<error>`` when none came (as client-go says it)."""
        self._child(self.rest_requests, str(code) if code else "<error>", method, host).inc()

    def wrote(self, kind: str) -> None:
        """One write of a generated object of ``kind`` (``settings_controller_writes_total``)."""
        self._child(self.writes, kind).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _standard(self, r: prom.CollectorRegistry) -> None:
        """controller-runtime's and client-go's series (their names, labels and buckets)."""
        self.queue_depth_std = prom.Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r
        )
        self.queue_adds = prom.Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=r,
        )
        self.queue_latency = prom.Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=_WORKQUEUE_BUCKETS,
            registry=r,
        )
        self.work_duration = prom.Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            ["name"],
            buckets=_WORKQUEUE_BUCKETS,
            registry=r,
        )
        self.queue_retries = prom.Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=r,
        )
        self.unfinished = prom.Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration.",
            ["name"],
            registry=r,
        )
        self.longest_running = prom.Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            ["name"],
            registry=r,
        )
        self.reconcile_total = prom.Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller, by result: success, error, "
            "requeue, requeue_after.",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = prom.Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = prom.Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.active_workers = prom.Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=r,
        )
        self.max_concurrent = prom.Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=r,
        )
        self.rest_requests = prom.Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ["code", "method", "host"],
            registry=r,
        )
        self.master_status = prom.Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
            "backup, 1 indicates master. 'name' is the string used to identify the lease.",
            ["name"],
            registry=r,
        )


# controller-runtime's: ExponentialBuckets(10e-9, 10, 12), and its reconcile-time buckets.
_WORKQUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))
_RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7),
    *(0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10),
    *(15, 20, 25, 30, 40, 50, 60),
)


class QueueMeter:
    """What one work queue reports: the ``workqueue_*`` series under ``name={name}`` and
    the ``controller_runtime_*`` ones under ``controller={name}``."""

    def __init__(self, meter: Metrics, name: str) -> None:
        self.adds = meter.queue_adds.labels(name)
        self.depth = meter.queue_depth_std.labels(name)
        self.latency = meter.queue_latency.labels(name)
        self.work = meter.work_duration.labels(name)
        self.retries = meter.queue_retries.labels(name)
        self.unfinished = meter.unfinished.labels(name)
        self.longest = meter.longest_running.labels(name)
        self.active = meter.active_workers.labels(name)
        self.time = meter.reconcile_time.labels(name)
        self.errors = meter.reconcile_errors.labels(name)
        self._results = {
            result: meter.reconcile_total.labels(name, result)
            for result in ("success", "error", "requeue", "requeue_after")
        }
        self.errors.inc(0)

    def reconciled(self, result: str, seconds: float) -> None:
        self._results[result].inc()
        if result == "error":
            self.errors.inc()
        self.time.observe(seconds)
        self.work.observe(seconds)

    def follow(self, depth: Callable[[], int], started: Callable[[], Collection[float]]) -> None:
        """Read the queue's depth and its processors' start times (time.monotonic()) at
        each scrape."""

        def ages() -> list[float]:
            now = time.monotonic()
            return [now - t for t in started()]

        self.depth.set_function(lambda: float(depth()))
        self.active.set_function(lambda: float(len(started())))
        self.unfinished.set_function(lambda: sum(ages()))
        self.longest.set_function(lambda: max(ages(), default=0.0))


def parse_bind_address(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` as controller-runtime takes it: ``:8080`` (host ``""``) is every
    interface, IPv4 and IPv6; ``0`` off."""
    if value in ("0", ""):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r}: expected HOST:PORT, :PORT or 0")
    return (host.strip("[]"), int(port))
