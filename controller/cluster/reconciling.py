"""Reconciling accounts from the operator's in-memory indexes.

Every handler ends here. ``account`` renders one account: merge (the core),
compare the content hash with the ConfigMap/Secret last seen (``generated``), apply only
what differs, then patch statuses that changed. ``everything`` is the fan-out
of a global or key change: one pass over the account index with bounded
concurrency, no annotation patched onto N objects.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Collection, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from controller.cluster import bodies, clients, conditions, generated, metrics, outputs, statuses
from controller.core import catalog, declarations, findings, merging, rendering

log = logging.getLogger(__name__)

T = TypeVar("T")
Index = Mapping[Any, Collection[T]]


@dataclasses.dataclass(frozen=True)
class Views:
    """Read-only views of the kopf indexes (``kopf.Index`` is a mapping of collections)
    and of the generated objects (``generated.Outputs``)."""

    globals: Index[bodies.Observed]  # by name
    accounts: Index[bodies.Observed]  # by name
    tenants: Index[str]  # namespace -> names of the accounts claiming it
    overrides: Index[bodies.Observed]  # by namespace
    configmaps: Mapping[str, bodies.Output]  # by namespace (generated.Outputs)
    secrets: Mapping[str, bodies.Output]  # by namespace (generated.Outputs)


def _one(index: Index[T], key: Any) -> T | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


class Reconciler:
    def __init__(
        self,
        cat: catalog.Catalog,
        writer: clients.Writer,
        keys: outputs.Keys,
        views: Views,
        meter: metrics.Metrics,
        concurrency: int = 16,
        retry_delay: float = 5.0,
        listed: Sequence[asyncio.Event] = (),
    ) -> None:
        self.catalog = cat
        self.writer = writer
        self.keys = keys
        self.views = views
        self.metrics = meter
        self.retry_delay = retry_delay
        self._concurrency = concurrency
        # Set once the generated objects are listed: a render before that would
        # see none and rewrite every one of them.
        self._listed = tuple(listed)
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        # namespace -> (account uid, plan) last applied; dropped on a failed write,
        # so a namespace deleted meanwhile is created again.
        self._namespaces: dict[str, tuple[str, str]] = {}
        self._events: dict[str, tuple[str, str]] = {}  # uid -> (reason, message) last posted
        # (kind, namespace) -> (content hash, owner uid) of the output last applied:
        # the watch event that echoes our own write needs no reconcile.
        self._written: dict[tuple[str, str], tuple[str, str]] = {}
        # (kind, namespace, name) -> (resourceVersion the status was computed from,
        # digest of the status patched): an index entry that has not seen our last
        # patch yet is not a reason to patch the same status again.
        self._patched: dict[tuple[str, str | None, str], tuple[str, str]] = {}
        self._last_global: declarations.GlobalSettings | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # retries waiting for their time
        self._pending: set[str] = set()  # accounts with a retry scheduled
        self.renders = 0  # accounts rendered since start (running.py compacts after bursts)
        self._queue: dict[str, None] = {}  # accounts to render, in order, each once
        self.metrics.count_queue(lambda: len(self._queue))
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0
        self._workers: list[asyncio.Task[None]] = []

    # --- entry points --------------------------------------------------------

    async def global_changed(self) -> None:
        """The global changed: its status, then every account if its declaration changed."""
        await self.global_status()
        observed = _one(self.views.globals, self._singleton)
        current = observed.declaration if observed else None
        if current != self._last_global or current is None:
            self._last_global = (
                current if isinstance(current, declarations.GlobalSettings) else None
            )
            await self.everything("global settings changed")

    async def keys_changed(self, names: Collection[str]) -> None:
        """Platform key Secrets changed: only a referenced one matters."""
        observed = _one(self.views.globals, self._singleton)
        decl = observed.declaration if observed else None
        if not isinstance(decl, declarations.GlobalSettings):
            return
        referenced = {
            ref.secret_name for i in decl.integrations.values() for ref in i.credentials.values()
        }
        if referenced & set(names):
            await self.global_status()
            await self.everything("platform key Secret changed")

    async def everything(self, why: str) -> None:
        names = list(self.views.accounts)
        self.metrics.fanout.observe(len(names))
        self.metrics.accounts.set(len(names))
        log.info("re-rendering %d accounts: %s", len(names), why)

        for name in names:
            self.request(name)
        await self.drained()
        self.metrics.full_pass_done()
        for namespace in list(self.views.overrides):
            if not self.views.tenants.get(namespace):
                await self.namespace(namespace)

    async def outputs_changed(self, kind: str, changes: Collection[generated.Change]) -> None:
        """Generated objects changed: repair them unless it is the echo of our own write.

        Called from the watch loop, so a repair is queued, not awaited.
        """
        for namespace, seen in changes:
            written = self._written.get((kind, namespace))
            if (
                seen is not None
                and written is not None
                and seen.managed
                and written[1] in seen.owners
                and seen.content_hash == written[0]
            ):
                continue
            self._request_claimants(namespace)

    def _request_claimants(self, namespace: str) -> bool:
        """Queue every account claiming ``namespace``; whether there was one."""
        names = sorted(set(self.views.tenants.get(namespace) or ()))
        for name in names:
            self.request(name)
        return bool(names)

    async def namespace(self, namespace: str) -> None:
        """An override in ``namespace`` changed: its account, or the orphan's status."""
        if self._request_claimants(namespace):
            return
        for observed in list(self.views.overrides.get(namespace) or ()):
            await self._set_status(
                observed,
                statuses.blocked(
                    observed,
                    findings.Reason.ORPHAN_OVERRIDE.value,
                    f"no Account has spec.namespace {namespace!r}, so these overrides "
                    "belong to no account",
                ),
            )

    # --- the work queue ---------------------------------------------------------
    # Handlers and fan-outs only name the accounts to render; --concurrency
    # workers render them, each name queued once however often it is asked for.
    # A kopf worker so returns at once instead of holding its object's event
    # (and its coroutines) until a render slot frees: at a cold start of 10,000
    # accounts that was every listed object for the whole start. A fan-out is
    # a pass of the same workers, not 10,000 tasks queued on a semaphore.

    def request(self, name: str) -> None:
        """Render ``name`` soon (once, if it is already waiting)."""
        if name in self._queue:
            return
        self._queue[name] = None
        self._idle.clear()
        self._wakeup.set()
        if not self._workers:
            self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def drained(self) -> None:
        """Until nothing is queued or being rendered."""
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            name = next(iter(self._queue))
            del self._queue[name]
            self._busy += 1
            try:
                await self.account(name)
            except Exception:  # a worker outlives any one account
                self.metrics.errors.labels("reconcile").inc()
                log.exception(
                    "account %s: reconcile failed; retrying in %.0fs", name, self.retry_delay
                )
                self._retry(name)
            finally:
                self._busy -= 1
                if not self._queue and not self._busy:
                    self._idle.set()

    async def account(self, name: str) -> None:
        """Render one account now (the workers' step; awaitable for tests and callers)."""
        for listed in self._listed:
            await listed.wait()
        # No slot to take: only the --concurrency workers call this (tests aside).
        async with self._locks[name]:
            started = time.perf_counter()
            outcome = await self._account(name)
            self.renders += 1
            self.metrics.duration.observe(time.perf_counter() - started)
            self.metrics.reconciled(name, outcome)

    async def global_status(self) -> None:
        for name in list(self.views.globals):
            observed = _one(self.views.globals, name)
            if observed is None:
                continue
            if name != self._singleton:
                await self._set_status(
                    observed,
                    statuses.blocked(
                        observed,
                        findings.Reason.SINGLETON.value,
                        f"only the GlobalIntegrationSettings named {self._singleton!r} is used",
                    ),
                )
                continue
            missing, referenced = self._missing_keys(observed.declaration)
            await self._set_status(observed, statuses.global_(observed, missing, referenced))

    # --- one account -----------------------------------------------------------

    @property
    def _singleton(self) -> str:
        return self.catalog.kinds[catalog.GLOBAL].singleton_name or "default"

    async def _account(self, name: str) -> str:
        observed = _one(self.views.accounts, name)
        if observed is None:
            return "gone"  # deleted: the garbage collector removes its outputs
        account = observed.declaration
        if not isinstance(account, declarations.Account):
            reason, message = statuses.problems(observed)
            await self._set_status(observed, statuses.blocked(observed, reason, message))
            return "blocked"
        claimants = sorted(set(self.views.tenants.get(account.namespace) or ()))
        if len(claimants) > 1:
            await self._set_status(
                observed,
                statuses.blocked(
                    observed,
                    findings.Reason.NAMESPACE_CONFLICT.value,
                    f"spec.namespace: namespace {account.namespace!r} is claimed by more than "
                    f"one account ({', '.join(claimants)}); outputs are left as they are",
                ),
            )
            return "blocked"
        global_obs = _one(self.views.globals, self._singleton)
        global_ = global_obs.declaration if global_obs else None
        overrides = list(self.views.overrides.get(account.namespace) or ())
        if not isinstance(global_, declarations.GlobalSettings):
            why = "no valid GlobalIntegrationSettings named 'default'; outputs are left as they are"
            await self._set_status(
                observed, statuses.blocked(observed, findings.Reason.NO_GLOBAL.value, why)
            )
            for o in overrides:
                await self._set_status(o, statuses.blocked(o, findings.Reason.NO_GLOBAL.value, why))
            return "blocked"

        by_type = {
            o.declaration.type: o.declaration
            for o in overrides
            if isinstance(o.declaration, declarations.IntegrationSettings)
        }
        result = merging.merge_account(self.catalog, global_, account, by_type)
        try:
            wrote = await self._write(observed, account, global_, result)
        except clients.WriteError as e:
            self._namespaces.pop(account.namespace, None)
            self.metrics.errors.labels("write").inc()
            log.warning("account %s: %s; retrying in %.0fs", name, e, self.retry_delay)
            await self._set_status(
                observed, statuses.blocked(observed, statuses.OUTPUT_FAILED, str(e))
            )
            self._retry(name)
            return "failed"

        await self._set_status(observed, statuses.account(observed, result, account.namespace))
        plan_notes = [
            f
            for f in result.findings
            if f.ref == account.ref
            and f.reason in (findings.Reason.PLAN_FORBIDS, findings.Reason.UNKNOWN_PLAN)
        ]
        for o in overrides:
            await self._set_status(o, statuses.override(o, result, plan_notes))
        return "written" if wrote else "unchanged"

    async def _write(
        self,
        observed: bodies.Observed,
        account: declarations.Account,
        global_: declarations.GlobalSettings,
        result: merging.AccountResult,
    ) -> bool:
        namespace = account.namespace
        wrote = False
        seen_configmap = self.views.configmaps.get(namespace)
        if self._namespaces.get(namespace) != (
            observed.uid,
            account.plan,
        ) and not outputs.namespace_labelled(seen_configmap, observed.uid, account.plan):
            await self.writer.apply(outputs.namespace(account))
            self.metrics.writes.labels("Namespace").inc()
        self._namespaces[namespace] = (observed.uid, account.plan)
        data = result.data
        if not outputs.in_sync(seen_configmap, data, observed.uid, account.plan):
            self._written.pop(("ConfigMap", namespace), None)
            await self.writer.apply(outputs.configmap(observed, namespace, data, account.plan))
            self._written[("ConfigMap", namespace)] = (rendering.content_hash(data), observed.uid)
            self.metrics.writes.labels("ConfigMap").inc()
            log.info("account %s: wrote %s/%s", account.name, namespace, rendering.CONFIGMAP_NAME)
            wrote = True
        keys = outputs.credential_data(global_, result, self.keys)
        if not outputs.in_sync(self.views.secrets.get(namespace), keys, observed.uid):
            self._written.pop(("Secret", namespace), None)
            await self.writer.apply(outputs.credentials_secret(observed, namespace, keys))
            self._written[("Secret", namespace)] = (rendering.content_hash(keys), observed.uid)
            self.metrics.writes.labels("Secret").inc()
            log.info(
                "account %s: wrote %s/%s (%d keys)",
                account.name,
                namespace,
                rendering.CREDENTIALS_SECRET_NAME,
                len(keys),
            )
            wrote = True
        return wrote

    def _retry(self, name: str) -> None:
        if name in self._pending:
            return  # one retry per account at a time

        async def later() -> None:
            await asyncio.sleep(self.retry_delay)
            self._pending.discard(name)
            self.request(name)

        self._pending.add(name)
        self._spawn(later())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _missing_keys(self, decl: declarations.Declaration | None) -> tuple[list[str], int]:
        if not isinstance(decl, declarations.GlobalSettings):
            return [], 0
        missing, referenced = [], 0
        for type_name, integration in decl.integrations.items():
            for slot, ref in integration.credentials.items():
                referenced += 1
                if self.keys.value(ref.secret_name, ref.key) is None:
                    missing.append(f"{ref.secret_name}/{ref.key} ({type_name}.{slot})")
        return missing, referenced

    # --- status and events -------------------------------------------------------

    async def _set_status(self, observed: bodies.Observed, status: dict[str, Any]) -> None:
        if not conditions.changed(observed.status, status):
            return
        key = (observed.kind, observed.namespace, observed.name)
        digest = hashlib.blake2b(
            json.dumps(status, sort_keys=True, default=str).encode(), digest_size=16
        ).hexdigest()
        if self._patched.get(key) == (observed.resource_version, digest):
            return  # patched from this very version already: the index is behind
        try:
            await self.writer.patch_status(observed.kind, observed.name, observed.namespace, status)
        except clients.WriteError as e:
            self._patched.pop(key, None)
            self.metrics.errors.labels("status").inc()
            log.warning("status of %s %s: %s", observed.kind, observed.name, e)
            return
        self._patched[key] = (observed.resource_version, digest)
        ready = conditions.find(status, conditions.READY)
        if ready is None:
            return
        said = (str(ready["reason"]), str(ready["message"]))
        if ready["status"] == "False" and self._events.get(observed.uid) != said:
            self._events[observed.uid] = said
            await self.writer.post_event(observed.involved, "Warning", *said)
        elif ready["status"] == "True":
            self._events.pop(observed.uid, None)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
