"""Connection checks in cluster mode: when to check, and where the answers go.

One ``ConnectionChecker`` per operator: a reconciler on the operator's runtime, with its
own work queue (``runtime.queueing``) keyed by credential (``openai.apiKey``).
Its ``sync`` checks one key slot the global references
(``controller.core.connections.targets``) and returns when to check it again
(``Result(requeue_after=...)``: ``--connection-check-interval`` seconds, transient
failures sooner, with backoff) instead of keeping a timer of its own. A slot is
queued at start, when its key's value or its endpoint changes, and when the
annotation ``integrations.igny8.com/test-connection`` on the global gets a new
value. One more key writes what the checks found: ``CONNECTED`` (the global's
status, once no check is in flight).

Answers go to statuses only, never to a ConfigMap, so a flapping provider never
rewrites an account's settings:

* the global: the ``Connected`` condition and ``status.connections``, written
  after every round of checks;
* each Account (``status.connected.<type>``) and IntegrationSettings
  (``status.connected``): whether the keys the account's effective settings use
  are connected. The account reconciler writes those, from the merge it makes
  anyway, reading the answers here (``settled``); ``on_connected`` tells it when
  one key's answer flips.

Events on the global mark each slot's transitions. Key values are read from
the ``SecretStore`` and only ever sent to the provider's endpoint.

One name, "connection check", end to end: this module, ``controller.core.connections``
(what answers mean), ``controller.providers.connections`` (the calls), the
``Connected`` condition, ``status.connections``, the ``settings_controller_connection_*``
metrics and ``--connection-check-interval``/``--connection-check-timeout``. Kept as
published: the annotation (and the CLI command) say ``test-connection``, the action a
person asks for; ``--verify-interval``/``--verify-timeout`` still work, hidden, for
existing manifests; the reason of an accepted key stays ``Verified`` and the gauge
``settings_controller_connected``, because alerts and dashboards match them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import prometheus_client as prom

from controller.cluster import conditions, metrics, reconciling
from controller.cluster.runtime import clients, queueing, records, secrets
from controller.core import catalog, connections, declarations
from controller.providers import connections as provider_connections

log = logging.getLogger(__name__)

ANNOTATION = f"{catalog.GROUP}/test-connection"
Outcome = connections.Outcome
Reason = connections.Reason

DEFAULT_INTERVAL = connections.DEFAULT_INTERVAL
DEFAULT_TIMEOUT = connections.DEFAULT_TIMEOUT
CONCURRENCY = 4  # checks in flight at once: there are a handful of keys, not thousands
QUEUE = "connection-checks"  # the queue's and controller's name in controller-runtime's metrics
# The checker's status fields (the global's ``Connected`` condition and ``status.connections``)
# are applied under this field manager, the reconciler's (``reporting``) under another:
# neither drops the other's.
FIELD_MANAGER = f"{records.FIELD_MANAGER}-connections"


@dataclasses.dataclass(frozen=True)
class _Connected:
    def __str__(self) -> str:
        return "the global's Connected status"


CONNECTED = _Connected()
Key = str | _Connected  # a str is a credential: ``<integration>.<slot>``


class _Meter:
    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.connection_checks = prom.Counter(
            "settings_controller_connection_checks_total",
            "Connection checks of platform keys against their providers, by integration, credential and reason.",
            ["integration", "credential", "reason"],
            registry=registry,
        )
        self.latency = prom.Histogram(
            "settings_controller_connection_check_seconds",
            "Time a provider took to answer a connection check (requests made only).",
            ["provider"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.connected = prom.Gauge(
            "settings_controller_connected",
            "1 when the provider accepts the key of this integration and credential, else 0.",
            ["integration", "credential"],
            registry=registry,
        )


class ConnectionChecker:
    def __init__(
        self,
        cat: catalog.Catalog,
        writer: clients.Writer,
        store: secrets.SecretStore,
        views: reconciling.Views,
        meter: metrics.Metrics,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.catalog = cat
        self.writer = writer
        self.store = store
        self.views = views
        self.interval = interval
        self.timeout = timeout
        self.meter = _Meter(meter.registry)
        self._singleton = cat.kinds[catalog.GLOBAL].singleton_name or "default"
        self._targets: dict[str, connections.Target] = {}
        self._fingerprints: dict[str, str] = {}  # target -> digest of (target, key value)
        self._outcomes: dict[str, Outcome] = {}  # latest, Checking included
        self._settled: dict[str, Outcome] = {}  # latest answer (what accounts are shown)
        self._failures: dict[str, int] = {}  # transient failures in a row
        self._checking: set[str] = set()  # checks in flight: the global's status waits
        self._annotation: str | None = None  # the test-connection annotation last seen
        self._global_seen = False
        # Told when a key's answer flips (connected or not), or a key is no longer used:
        # the accounts' ``connected`` changes (the operator fans out the reconciler).
        self.on_connected: Callable[[], None] = lambda: None
        self._http = provider_connections.session()
        # No worker before ``run``: the operator calls it once every cache is listed.
        self.queue: queueing.WorkQueue[Key] = queueing.WorkQueue(
            self.sync, CONCURRENCY, meter=meter.queue(QUEUE, CONCURRENCY), autostart=False
        )

    # --- what the routes call (operating) -----------------------------------------------------

    def global_seen(self, observed: records.Observed) -> None:
        value = observed.annotations.get(ANNOTATION)
        # The value seen at start is not a request: everything is checked at start anyway.
        if self._global_seen and value is not None and value != self._annotation:
            log.info("test-connection requested (annotation %s)", ANNOTATION)
            for name in self._targets:
                self.queue.add(name)
        self._annotation, self._global_seen = value, True
        # Compare again (someone may have edited the status), write only if it differs.
        self.queue.add(CONNECTED)
        self.refresh()

    def settled(self) -> Mapping[str, Outcome] | None:
        """The latest answer for every key the global references (by ``Target.name``), or
        None until each has one (the accounts' ``connected`` is kept as it is meanwhile)."""
        _, decl = self._global()
        if decl is None or any(n not in self._settled for n in self._targets):
            return None
        return dict(self._settled)

    # --- what to check ----------------------------------------------------------------

    def _global(self) -> tuple[records.Observed | None, declarations.GlobalSettings | None]:
        observed = self.views.globals.get(self._singleton)
        decl = observed.declaration if observed is not None else None
        return observed, decl if isinstance(decl, declarations.GlobalSettings) else None

    def _key(self, target: connections.Target) -> str | None:
        encoded = self.store.value(target.secret_name, target.key)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded).decode("utf-8").strip() or None
        except (binascii.Error, UnicodeDecodeError):
            return None

    def _fingerprint(self, target: connections.Target) -> str:
        key = self._key(target) or ""
        return hashlib.blake2b(f"{target!r}\0{key}".encode(), digest_size=16).hexdigest()

    def refresh(self) -> None:
        """Re-read the targets; a new one, or one whose key or endpoint changed, is due now."""
        _, decl = self._global()
        current = {t.name: t for t in connections.targets(self.catalog, decl)} if decl else {}
        for name in set(self._targets) - set(current):
            for table in (self._fingerprints, self._outcomes, self._settled):
                table.pop(name, None)
            self._failures.pop(name, None)
            self._forget_series(self._targets[name])
            self.queue.add(CONNECTED)
        for name, target in current.items():
            fingerprint = self._fingerprint(target)
            if self._fingerprints.get(name) == fingerprint:
                continue
            changed = name in self._fingerprints
            self._fingerprints[name] = fingerprint
            self._failures.pop(name, None)
            if changed:  # a rotation is reported good only once its check says so
                self._outcomes[name] = Outcome(target, Reason.CHECKING, 0.0, conditions.now())
            self.queue.add(name)  # now, whatever requeue it waited for
        gone = set(self._targets) - set(current)
        self._targets = current
        if gone and self.settled() is not None:
            self.on_connected()  # a key no longer used: the accounts that used it change

    def _forget_series(self, target: connections.Target) -> None:
        """Drop a removed credential's label sets: a ``settings_controller_connected 0`` left
        behind would keep ``SettingsControllerKeyNotConnected`` firing about a key nobody uses."""
        with contextlib.suppress(KeyError):
            self.meter.connected.remove(target.integration, target.slot)
        for reason in Reason:
            with contextlib.suppress(KeyError):
                self.meter.connection_checks.remove(target.integration, target.slot, reason.value)

    # --- the reconciler ---------------------------------------------------------------

    async def run(self) -> None:
        """Work on the queue until cancelled (a failed key is retried after a backoff)."""
        self.refresh()
        self.queue.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.queue.close()

    async def sync(self, key: Key) -> queueing.Result:
        """The queue's step: check one credential (and when to check it again), or write
        what the checks found."""
        if isinstance(key, _Connected):
            if not self._checking:  # a round in flight: its last check queues this again
                await self._global_status()
            return queueing.DONE
        target = self._targets.get(key)
        if target is None:
            return queueing.DONE  # removed since it was queued
        outcome = self._outcomes.get(key)
        if outcome is not None and outcome.reason is Reason.CHECKING:
            await self._global_status()  # say "Checking" before the check, not after
        self._checking.add(key)
        try:
            return await self._check(key, target)
        finally:
            self._checking.discard(key)
            self.queue.add(CONNECTED)

    async def _check(self, name: str, target: connections.Target) -> queueing.Result:
        started = self._fingerprints.get(name)
        try:
            (outcome,) = await provider_connections.check_all(
                [target], self._key, self.timeout, 1, http=self._http
            )
        except Exception as e:
            # check_all answers for every key whatever the providers send; should it raise
            # anyway, the check still ends with an answer, not with the key left at
            # "Checking" until the next interval. The class only: a text could hold what
            # a provider sent.
            log.warning("connection check %s failed (%s); reporting it", name, type(e).__name__)
            detail = f"check failed: {type(e).__name__}"
            outcome = Outcome(
                target, Reason.UNEXPECTED_RESPONSE, 0.0, conditions.now(), detail=detail
            )
        if self._fingerprints.get(name) != started or name not in self._targets:
            # The key or endpoint changed meanwhile (queued again already), or the
            # credential is gone (its series are gone and stay gone).
            return queueing.DONE
        # Only the detail holds text from outside; scrubbed against every key we hold.
        held = [k for k in map(self._key, self._targets.values()) if k]
        outcome = dataclasses.replace(outcome, detail=connections.scrub(outcome.detail, held))
        transient = outcome.reason in connections.TRANSIENT
        failures = self._failures.get(name, 0) + 1 if transient else 0
        self._failures[name] = failures
        try:
            await self._record(name, outcome)
        except Exception as e:  # the bookkeeping must not cost the key its schedule
            log.warning("connection %s: recording its check failed (%s)", name, type(e).__name__)
            self._outcomes[name] = self._settled[name] = outcome
        return queueing.Result(
            requeue_after=connections.next_delay(outcome, failures, self.interval)
        )

    async def _record(self, name: str, outcome: Outcome) -> None:
        target = outcome.target
        self.meter.connection_checks.labels(
            target.integration, target.slot, outcome.reason.value
        ).inc()
        if outcome.status is not None or outcome.reason is Reason.TIMEOUT:
            self.meter.latency.labels(target.provider).observe(outcome.latency)
        self.meter.connected.labels(target.integration, target.slot).set(int(outcome.connected))
        before = self._settled.get(name)
        self._outcomes[name] = self._settled[name] = outcome
        if (before is None or before.connected != outcome.connected) and self.settled() is not None:
            self.on_connected()  # once every key has its first answer, then on each flip
        if before is None or before.reason is not outcome.reason:
            level = logging.INFO if outcome.connected else logging.WARNING
            log.log(level, "connection %s: %s: %s", name, outcome.reason.value, outcome.message)
            await self._event(outcome)

    async def _event(self, outcome: Outcome) -> None:
        observed, _ = self._global()
        if observed is None:
            return
        await self.writer.post_event(
            observed.involved,
            "Normal" if outcome.connected else "Warning",
            outcome.reason.value,
            f"{outcome.target.name}: {outcome.message}",
        )

    # --- statuses ----------------------------------------------------------------------

    async def _global_status(self) -> None:
        observed, decl = self._global()
        if observed is None or decl is None:
            return
        shown = [self._outcomes[n] for n in self._targets if n in self._outcomes]
        if len(shown) < len(self._targets):
            return  # the first round is not complete: nothing half-known to report
        verdict = connections.verdict(shown)
        condition = _condition(
            verdict, observed.generation, observed.status.get("conditions") or ()
        )
        status = {"conditions": [condition], "connections": [o.entry() for o in shown]}
        if not conditions.changed(observed.status, status):
            return
        try:
            await self.writer.apply_status(
                observed.kind, observed.name, None, status, FIELD_MANAGER
            )
        except clients.WriteError as e:
            log.warning("connection status of the global: %s", e)

    async def close(self) -> None:
        await self.queue.close()
        await self._http.close()


def _condition(
    verdict: connections.Verdict, generation: int, previous: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The ``Connected`` condition; True, False or Unknown (a changed key being checked)."""
    before = next((c for c in previous if c.get("type") == connections.CONNECTED), None)
    since = (
        before["lastTransitionTime"]
        if before is not None and before.get("status") == verdict.status
        else conditions.now()
    )
    return {
        "type": connections.CONNECTED,
        "status": verdict.status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": verdict.reason,
        "message": verdict.message[:32768],
    }
