"""Connection checks in cluster mode: when to check, and where the answers go.

One ``Verifier`` per operator. It checks every key slot the global references
(``controller.core.connections.targets``) at start, when a key's value or a
credential's endpoint changes, every ``--verify-interval`` seconds (transient
failures sooner, with backoff), and when the annotation
``integrations.igny8.com/test-connection`` on the global gets a new value.

Answers go to statuses only, never to a ConfigMap, so a flapping provider never
rewrites an account's settings:

* the global: the ``Connected`` condition and ``status.connections``, written
  after every round of checks;
* each Account (``status.connected.<type>``) and IntegrationSettings
  (``status.connected``): whether the keys the account's effective settings use
  are verified, written only when that boolean changes.

Events on the global mark each slot's transitions. Key values are read from
the ``KeyStore`` and only ever sent to the provider's endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf
import prometheus_client as prom

from controller.cluster import bodies, clients, conditions, keys, metrics, reconciling
from controller.core import catalog, connections, declarations, merging
from controller.providers import checks

log = logging.getLogger(__name__)

ANNOTATION = f"{catalog.GROUP}/test-connection"
Outcome = connections.Outcome
Reason = connections.Reason

DEFAULT_INTERVAL = connections.DEFAULT_INTERVAL
DEFAULT_TIMEOUT = connections.DEFAULT_TIMEOUT
CONCURRENCY = 4  # checks in flight at once: there are a handful of keys, not thousands
_STATUS_WRITES = 16  # account status patches in flight after a transition


class _Meter:
    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.checks = prom.Counter(
            "settings_controller_connection_checks_total",
            "Key checks against providers, by integration, credential and reason.",
            ["integration", "credential", "reason"],
            registry=registry,
        )
        self.latency = prom.Histogram(
            "settings_controller_connection_check_seconds",
            "Time a provider took to answer a key check (requests made only).",
            ["provider"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.connected = prom.Gauge(
            "settings_controller_connected",
            "1 when the key of this integration and credential is verified, else 0.",
            ["integration", "credential"],
            registry=registry,
        )


class Verifier:
    def __init__(
        self,
        cat: catalog.Catalog,
        writer: clients.Writer,
        store: keys.KeyStore,
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
        self._due: dict[str, float] = {}  # target -> monotonic time of its next check
        self._annotation: str | None = None  # the test-connection annotation last seen
        self._global_seen = False
        self._global_dirty = False  # the global changed: is its connection status still ours?
        self._accounts: set[str] = set()  # accounts whose connected status to recompute
        self._all_accounts = False
        self._wake = asyncio.Event()
        self._http = checks.session()

    # --- what the handlers call -----------------------------------------------------

    def global_seen(self, observed: bodies.Observed) -> None:
        value = observed.annotations.get(ANNOTATION)
        # The value seen at start is not a request: everything is checked at start anyway.
        if self._global_seen and value is not None and value != self._annotation:
            log.info("test-connection requested (annotation %s)", ANNOTATION)
            for name in self._targets:
                self._due[name] = 0.0
        self._annotation, self._global_seen = value, True
        # Another writer's status patch may have dropped ours (a stale view of the
        # conditions): compare again, write only if it differs.
        self._global_dirty = True
        self.refresh()

    def account_seen(self, name: str) -> None:
        self._accounts.add(name)
        self._wake.set()

    def namespace_seen(self, namespace: str) -> None:
        self._accounts.update(self.views.tenants.get(namespace) or ())
        self._wake.set()

    # --- what to check ----------------------------------------------------------------

    def _global(self) -> tuple[bodies.Observed | None, declarations.GlobalSettings | None]:
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
            for table in (self._fingerprints, self._outcomes, self._settled, self._due):
                table.pop(name, None)
            self._failures.pop(name, None)
            self._all_accounts = True
        for name, target in current.items():
            fingerprint = self._fingerprint(target)
            if self._fingerprints.get(name) == fingerprint:
                continue
            changed = name in self._fingerprints
            self._fingerprints[name] = fingerprint
            self._failures.pop(name, None)
            self._due[name] = 0.0
            if changed:  # a rotation is reported good only once its check says so
                self._outcomes[name] = Outcome(target, Reason.CHECKING, 0.0, conditions.now())
        self._targets = current
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Check what is due and write what changed, until cancelled; survives any one failure."""
        self.refresh()
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("connection checks: a step failed; retrying in 5s")
                await asyncio.sleep(5.0)

    async def _step(self) -> None:
        self._wake.clear()  # before looking: a wake-up from here on is not lost
        now = time.monotonic()
        due = [n for n, at in self._due.items() if at <= now and n in self._targets]
        if any(self._outcomes[n].reason is Reason.CHECKING for n in due if n in self._outcomes):
            await self._global_status()  # say "Checking" before the check, not after
        if due:
            await self._check(due)
        if due or self._global_dirty:
            self._global_dirty = False
            await self._global_status()
        if self._all_accounts or self._accounts:
            await self._account_statuses()
        if due:
            return
        wait = min((at - now for at in self._due.values()), default=self.interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    async def _check(self, names: list[str]) -> None:
        targets = [self._targets[n] for n in names]
        started = {n: self._fingerprints.get(n) for n in names}
        mark = time.monotonic() + self.interval
        for name in names:
            self._due[name] = mark  # changed meanwhile (the annotation): due again at once
        outcomes = await checks.check_all(
            targets, self._key, self.timeout, CONCURRENCY, http=self._http
        )
        for outcome in outcomes:
            name = outcome.target.name
            if self._fingerprints.get(name) != started[name]:
                continue  # the key or endpoint changed meanwhile: that check is due already
            await self._record(name, outcome, reschedule=self._due.get(name) == mark)

    async def _record(self, name: str, outcome: Outcome, reschedule: bool) -> None:
        target = outcome.target
        transient = outcome.reason in connections.TRANSIENT
        failures = self._failures.get(name, 0) + 1 if transient else 0
        self._failures[name] = failures
        if reschedule:
            delay = connections.next_delay(outcome, failures, self.interval)
            self._due[name] = time.monotonic() + delay
        self.meter.checks.labels(target.integration, target.slot, outcome.reason.value).inc()
        if outcome.status is not None or outcome.reason is Reason.TIMEOUT:
            self.meter.latency.labels(target.provider).observe(outcome.latency)
        self.meter.connected.labels(target.integration, target.slot).set(int(outcome.connected))
        before = self._settled.get(name)
        self._outcomes[name] = self._settled[name] = outcome
        if before is None or before.reason is not outcome.reason:
            level = logging.INFO if outcome.connected else logging.WARNING
            log.log(level, "connection %s: %s: %s", name, outcome.reason.value, outcome.message)
            await self._event(outcome)
        if before is None or before.connected != outcome.connected:
            self._all_accounts = True

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
        previous = list(observed.status.get("conditions") or ())
        condition = _condition(verdict, observed.generation, previous)
        merged = [condition if c.get("type") == connections.CONNECTED else c for c in previous]
        if condition not in merged:
            merged.append(condition)
        entries = [o.entry() for o in shown]
        if merged == previous and observed.status.get("connections") == entries:
            return
        try:
            await self.writer.patch_status(
                observed.kind,
                observed.name,
                None,
                {"conditions": merged, "connections": entries},
            )
        except clients.WriteError as e:
            log.warning("connection status of the global: %s", e)

    async def _account_statuses(self) -> None:
        _, decl = self._global()
        if decl is None or any(n not in self._settled for n in self._targets):
            return  # keep what the statuses say until every key has an answer
        names = list(self.views.accounts) if self._all_accounts else sorted(self._accounts)
        self._all_accounts = False
        self._accounts.clear()
        settled = dict(self._settled)
        slots = asyncio.Semaphore(_STATUS_WRITES)

        async def one(name: str) -> None:
            async with slots:
                await self._account_status(name, decl, settled)

        await asyncio.gather(*(one(n) for n in names))

    async def _account_status(
        self, name: str, global_: declarations.GlobalSettings, settled: Mapping[str, Outcome]
    ) -> None:
        observed = self.views.accounts.get(name)
        account = observed.declaration if observed is not None else None
        if observed is None or not isinstance(account, declarations.Account):
            return
        overrides = list((self.views.overrides.get(account.namespace) or {}).values())
        by_type = {
            o.declaration.type: o.declaration
            for o in overrides
            if isinstance(o.declaration, declarations.IntegrationSettings)
        }
        result = merging.merge_account(self.catalog, global_, account, by_type)
        connected = connections.services_connected(self.catalog, result, settled)
        before = observed.status.get("connected") or {}
        if before != connected:
            # A merge patch merges maps: name the types that are gone as null.
            patch = {t: connected.get(t) for t in {*before, *connected}}
            await self._patch(observed, {"connected": patch})
        for o in overrides:
            decl = o.declaration
            if isinstance(decl, declarations.IntegrationSettings):
                mine = connected.get(decl.type)
                if o.status.get("connected") != mine:
                    await self._patch(o, {"connected": mine})

    async def _patch(self, observed: bodies.Observed, status: dict[str, Any]) -> None:
        try:
            await self.writer.patch_status(observed.kind, observed.name, observed.namespace, status)
        except clients.WriteError as e:
            log.warning("connection status of %s %s: %s", observed.kind, observed.name, e)

    async def close(self) -> None:
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


# --- hooks: one call each from running.py and handlers.py --------------------------------


def start(
    memo: kopf.Memo,
    writer: clients.Writer,
    store: keys.KeyStore,
    views: reconciling.Views,
    interval: float,
    timeout: float,
) -> list[asyncio.Task[None]]:
    """Start checking (``interval`` 0: checks off); the tasks to cancel at stop."""
    if interval <= 0:
        log.info("connection checks are off (--verify-interval 0)")
        return []
    verifier = Verifier(memo.catalog, writer, store, views, memo.metrics, interval, timeout)
    memo.connections = verifier
    return [asyncio.create_task(verifier.run())]


def on_keys(
    first: Callable[[frozenset[str]], Awaitable[None]], memo: kopf.Memo
) -> Callable[[frozenset[str]], Awaitable[None]]:
    """The key watch's callback: a re-check of changed keys is scheduled, then ``first`` (the
    reconciler) runs; not the other way round, as its fan-out may take seconds."""

    async def changed(names: frozenset[str]) -> None:
        verifier: Verifier | None = memo.get("connections")
        if verifier is not None:
            verifier.refresh()
        await first(names)

    return changed


def global_seen(memo: kopf.Memo, observed: bodies.Observed) -> None:
    verifier: Verifier | None = memo.get("connections")
    if verifier is not None:
        verifier.global_seen(observed)


def account_seen(memo: kopf.Memo, name: str) -> None:
    verifier: Verifier | None = memo.get("connections")
    if verifier is not None:
        verifier.account_seen(name)


def namespace_seen(memo: kopf.Memo, namespace: str) -> None:
    verifier: Verifier | None = memo.get("connections")
    if verifier is not None:
        verifier.namespace_seen(namespace)


async def stop(memo: kopf.Memo) -> None:
    verifier: Verifier | None = memo.get("connections")
    if verifier is not None:
        await verifier.close()
