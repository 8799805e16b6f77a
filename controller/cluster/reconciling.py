"""Carrying out the core's decision for one account namespace at a time.

Handlers and watches only name the namespaces a change concerns (``request``);
the work queue (``queueing``) hands each to ``sync``, which asks the core
(``decisions.decide``) what the namespace's fate is and executes it: render
and apply what differs from what was last seen (``generated``), keep the
outputs of a namespace in conflict, or remove the outputs an account left
behind when it was deleted or moved. Statuses and Events go through
``reporting``. A global or key change is a fan-out: every known namespace
queued once, the same workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Collection, Coroutine, Mapping, Sequence
from typing import Any

from controller.cluster import (
    bodies,
    clients,
    generated,
    manifests,
    metrics,
    queueing,
    reporting,
    statuses,
)
from controller.core import catalog, decisions, declarations, findings, merging, rendering

log = logging.getLogger(__name__)

Verdict = decisions.Verdict


@dataclasses.dataclass(frozen=True)
class Views:
    """Read-only views of the custom resources (``resources``), the generated objects
    and the labelled namespaces (``generated``)."""

    globals: Mapping[str, bodies.Observed]  # by name
    accounts: Mapping[str, bodies.Observed]  # by name
    tenants: Mapping[str, Mapping[str, bodies.Observed]]  # namespace -> the Accounts claiming it
    overrides: Mapping[str, Mapping[str, bodies.Observed]]  # namespace -> its overrides by name
    configmaps: Mapping[str, bodies.Digest]  # by namespace (generated.Digests)
    secrets: Mapping[str, bodies.Digest]  # by namespace (generated.Digests)
    namespaces: Mapping[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict
    )  # namespace -> (plan, account) labels (generated.Namespaces)


class World:
    """The cluster's indexes as the core's ``decisions.World``."""

    def __init__(self, views: Views) -> None:
        self.views = views

    def observed_accounts(self, namespace: str) -> list[bodies.Observed]:
        """Every Account object naming ``namespace`` (valid or not), by name."""
        claiming = self.views.tenants.get(namespace) or {}
        return [claiming[name] for name in sorted(claiming)]

    def claimants(self, namespace: str) -> Sequence[declarations.Account]:
        return [
            o.declaration
            for o in self.observed_accounts(namespace)
            if isinstance(o.declaration, declarations.Account)
            and o.declaration.namespace == namespace
        ]

    def namesakes(self, name: str) -> int:
        return 1  # the API server keeps names unique

    def overrides_in(
        self, namespace: str
    ) -> Mapping[str, Sequence[declarations.IntegrationSettings]]:
        return {
            o.declaration.type: [o.declaration]
            for o in (self.views.overrides.get(namespace) or {}).values()
            if isinstance(o.declaration, declarations.IntegrationSettings)
        }


class Reconciler:
    def __init__(
        self,
        cat: catalog.Catalog,
        writer: clients.Writer,
        keys: manifests.Keys,
        views: Views,
        meter: metrics.Metrics,
        concurrency: int = 16,
        listed: Sequence[asyncio.Event] = (),
        backoff: queueing.Backoff | None = None,
        bucket: queueing.Bucket | None = None,
    ) -> None:
        self.catalog = cat
        self.writer = writer
        self.keys = keys
        self.views = views
        self.world = World(views)
        self.metrics = meter
        self.reporter = reporting.Reporter(writer, meter)
        self.queue = queueing.WorkQueue(
            self.sync,
            concurrency,
            backoff,
            bucket,
            on_retry=lambda key, delay: meter.retries.inc(),
        )
        # Set once each followed kind is listed: before that, a namespace would
        # look unclaimed (its outputs removed), or its outputs missing (every
        # one rewritten). (running.py passes them; tests that call ``sync``
        # directly need none.)
        self._listed = tuple(listed)
        # What was written and not yet echoed, by (kind, namespace): an output's
        # (content hash, owner uid), a Namespace's (plan, account) labels. The
        # watch event that echoes our own write needs no reconcile.
        self._written: dict[tuple[str, str], tuple[str, str]] = {}
        self._last_global: declarations.GlobalSettings | None = None
        self.renders = 0  # namespaces synced since start (running.py compacts after bursts)
        meter.count_queue(lambda: self.queue.depth, self.queue.oldest)

    # --- what handlers and watches call -----------------------------------------

    def request(self, namespace: str) -> None:
        """Sync ``namespace`` soon (once, if it is already waiting)."""
        self.queue.add(namespace)

    async def account_changed(
        self, before: bodies.Observed | None, after: bodies.Observed | None
    ) -> None:
        """An Account changed (None: absent): settle the namespace it claims and the one
        it claimed before (a move or a deletion leaves outputs there)."""
        if after is not None and not isinstance(after.declaration, declarations.Account):
            await self.account_invalid(after)
        for namespace in sorted({o.claims for o in (before, after) if o and o.claims}):
            self.request(namespace)
        if after is None and before is not None:
            self.reporter.forget(catalog.ACCOUNT, None, before.name)

    async def account_invalid(self, observed: bodies.Observed) -> None:
        """An Account the core cannot read (no namespace to queue): say why on it."""
        reason, message = statuses.problems(observed)
        await self.reporter.status(observed, statuses.blocked(observed, reason, message))

    def override_changed(self, namespace: str, name: str, deleted: bool = False) -> None:
        if deleted:
            self.reporter.forget(catalog.OVERRIDE, namespace, name)
        self.request(namespace)

    async def global_changed(self) -> None:
        """The global changed: its status, then every namespace if its declaration changed."""
        await self.global_status()
        current = self._global()
        if current != self._last_global or current is None:
            self._last_global = current
            await self.everything("global settings changed")

    async def keys_changed(self, names: Collection[str]) -> None:
        """Platform key Secrets changed: only a referenced one matters."""
        decl = self._global()
        if decl is None:
            return
        referenced = {
            ref.secret_name for i in decl.integrations.values() for ref in i.credentials.values()
        }
        if referenced & set(names):
            await self.global_status()
            await self.everything("platform key Secret changed")

    async def everything(self, why: str) -> None:
        """Queue every namespace anything is known about, and wait until they are synced."""
        namespaces = (
            set(self.views.tenants)
            | set(self.views.overrides)
            | {ns for ns, seen in self.views.configmaps.items() if seen.managed}
            | {ns for ns, seen in self.views.secrets.items() if seen.managed}
            | set(self.views.namespaces)
        )
        self.metrics.fanout.observe(len(namespaces))
        self.metrics.accounts.set(len(self.views.accounts))
        log.info("syncing %d namespaces: %s", len(namespaces), why)
        for namespace in sorted(namespaces):
            self.request(namespace)
        await self.queue.settled()
        self.metrics.full_pass_done()

    async def generated_changed(self, kind: str, changes: Collection[generated.Change]) -> None:
        """Generated objects changed: repair them unless it is the echo of our own write."""
        for namespace, seen in changes:
            # Each write is echoed once: what was written is needed only until
            # then (at 10,000 accounts, 20,000 entries held for nothing).
            written = self._written.pop((kind, namespace), None)
            if (
                seen is not None
                and written is not None
                and seen.managed
                and written[1] in seen.owners
                and seen.content_hash == written[0]
            ):
                continue
            self.request(namespace)

    async def namespaces_changed(self, changed: Collection[str]) -> None:
        """Our labels on a namespace changed (removed by hand, say): settle it again, unless
        it is the echo of our own labelling (a second sync of every new account)."""
        for namespace in changed:
            labelled = self._written.pop(("Namespace", namespace), None)
            if labelled is not None and self.views.namespaces.get(namespace) == labelled:
                continue
            self.request(namespace)

    async def namespace(self, namespace: str) -> None:
        """Sync ``namespace`` now (tests and callers that want to await it)."""
        await self.sync(namespace)

    async def account(self, name: str) -> None:
        """Sync the namespace account ``name`` claims, now."""
        observed = self.views.accounts.get(name)
        if observed is None:
            return
        if not isinstance(observed.declaration, declarations.Account):
            await self.account_invalid(observed)
            return
        await self.sync(observed.declaration.namespace)

    async def drained(self) -> None:
        await self.queue.settled()

    async def global_status(self) -> None:
        for name, observed in list(self.views.globals.items()):
            if name != self._singleton:
                await self.reporter.status(
                    observed,
                    statuses.blocked(
                        observed,
                        findings.Reason.SINGLETON.value,
                        decisions.not_the_singleton(self._singleton),
                    ),
                )
                continue
            missing, referenced = self._missing_keys(observed.declaration)
            await self.reporter.status(observed, statuses.global_(observed, missing, referenced))

    # --- one namespace -----------------------------------------------------------

    async def sync(self, namespace: str) -> None:
        """The queue's step: decide ``namespace``'s fate and carry it out (raises to retry)."""
        for listed in self._listed:
            await listed.wait()
        started = time.perf_counter()
        outcome = "failed"
        try:
            outcome = await self._sync(namespace)
        finally:
            self.metrics.reconciled(namespace, outcome)
            self.renders += 1
            self.metrics.duration.observe(time.perf_counter() - started)

    async def _sync(self, namespace: str) -> str:
        decision = decisions.decide(self.world, namespace, self._global())
        observed_accounts = self.world.observed_accounts(namespace)
        for o in observed_accounts:
            if not isinstance(o.declaration, declarations.Account):
                await self.account_invalid(o)
        by_name = {
            o.name: o for o in observed_accounts if isinstance(o.declaration, declarations.Account)
        }
        overrides = []
        for o in (self.views.overrides.get(namespace) or {}).values():
            if isinstance(o.declaration, declarations.IntegrationSettings):
                overrides.append(o)
            else:
                reason, message = statuses.problems(o)
                await self.reporter.status(o, statuses.blocked(o, reason, message))

        if decision.verdict is not Verdict.RENDER:
            if decision.verdict is Verdict.REMOVE:
                await self._remove(namespace)
            cause = decision.cause
            if cause is not None:
                for o in [*by_name.values(), *overrides]:
                    await self.reporter.status(
                        o, statuses.blocked(o, cause.reason.value, cause.message)
                    )
            return "removed" if decision.verdict is Verdict.REMOVE else "blocked"

        account = decision.account
        global_ = self._global()
        assert account is not None and global_ is not None
        observed = by_name[account.name]
        result = merging.merge_account(self.catalog, global_, account, decision.overrides)
        try:
            wrote = await self._write(observed, account, global_, result)
        except clients.WriteError as e:
            self.metrics.errors.labels("write").inc()
            log.warning("account %s: %s; retrying after a backoff", account.name, e)
            await self.reporter.status(
                observed, statuses.blocked(observed, statuses.OUTPUT_FAILED, str(e))
            )
            raise
        except _Foreign as e:
            await self.reporter.status(
                observed,
                statuses.blocked(observed, findings.Reason.OUTPUT_CONFLICT.value, str(e)),
            )
            return "blocked"

        missing = statuses.missing_keys(global_, result, self.keys)
        plan_notes = [
            f
            for f in result.findings
            if f.ref == account.ref
            and f.reason in (findings.Reason.PLAN_FORBIDS, findings.Reason.UNKNOWN_PLAN)
        ]
        # Each object's status is its own request: at once, like the outputs.
        await _all(
            [
                self.reporter.status(
                    observed, statuses.account(observed, result, namespace, missing)
                ),
                *(
                    self.reporter.status(o, statuses.override(o, result, plan_notes))
                    for o in overrides
                ),
            ]
        )
        return "written" if wrote else "unchanged"

    async def _write(
        self,
        observed: bodies.Observed,
        account: declarations.Account,
        global_: declarations.GlobalSettings,
        result: merging.AccountResult,
    ) -> bool:
        namespace = account.namespace
        seen_configmap = self.views.configmaps.get(namespace)
        seen_secret = self.views.secrets.get(namespace)
        for kind, seen, name in (
            ("ConfigMap", seen_configmap, rendering.CONFIGMAP_NAME),
            ("Secret", seen_secret, rendering.CREDENTIALS_SECRET_NAME),
        ):
            if seen is not None and not seen.managed:
                # Never adopt: the object holds someone else's data, and the
                # Account's ownership would let the garbage collector delete it.
                raise _Foreign(
                    f"a {kind} named {name} that the operator did not create exists in "
                    f"namespace {namespace}; it is left untouched, and no outputs are written "
                    "there until it is removed or renamed"
                )
        labels = (account.plan, account.name)
        if self.views.namespaces.get(namespace) != labels:
            self._written.pop(("Namespace", namespace), None)
            await self.writer.apply(manifests.namespace(account))
            self._written[("Namespace", namespace)] = labels
            self.metrics.writes.labels("Namespace").inc()
        # The ConfigMap and the Secret are independent: written at once, an
        # account's writes take two round trips after the namespace, not three.
        writes = []
        data = result.data
        if not manifests.in_sync(seen_configmap, data, observed.uid, account.plan):
            writes.append(
                self._apply(
                    "ConfigMap",
                    namespace,
                    manifests.configmap(observed, namespace, data, account.plan),
                    rendering.content_hash(data),
                    observed.uid,
                    f"account {account.name}: wrote {namespace}/{rendering.CONFIGMAP_NAME}",
                )
            )
        keys = manifests.credential_data(global_, result, self.keys)
        if not manifests.in_sync(seen_secret, keys, observed.uid):
            writes.append(
                self._apply(
                    "Secret",
                    namespace,
                    manifests.credentials_secret(observed, namespace, keys),
                    rendering.content_hash(keys),
                    observed.uid,
                    f"account {account.name}: wrote {namespace}/"
                    f"{rendering.CREDENTIALS_SECRET_NAME} ({len(keys)} keys)",
                )
            )
        await _all(writes)
        return bool(writes)

    async def _apply(
        self,
        kind: str,
        namespace: str,
        manifest: Mapping[str, Any],
        digest: str,
        owner: str,
        done: str = "",
    ) -> None:
        self._written.pop((kind, namespace), None)
        try:
            await self.writer.apply(manifest)
        except clients.WriteError as e:
            if e.status not in (409, 422):
                raise
            # Our object was edited into a shape an apply cannot repair (a key
            # moved to binaryData, a field owned by someone else): write it anew.
            log.warning(
                "%s %s/%s: %s; replacing it", kind, namespace, manifest["metadata"]["name"], e
            )
            await self.writer.delete(kind, namespace, manifest["metadata"]["name"])
            await self.writer.apply(manifest)
        self._written[(kind, namespace)] = (digest, owner)
        self.metrics.writes.labels(kind).inc()
        if done:
            log.info("%s", done)

    async def _remove(self, namespace: str) -> None:
        """No account claims ``namespace``: what an account generated there goes."""
        for kind, seen, name in (
            ("ConfigMap", self.views.configmaps.get(namespace), rendering.CONFIGMAP_NAME),
            ("Secret", self.views.secrets.get(namespace), rendering.CREDENTIALS_SECRET_NAME),
        ):
            # Only what an Account owns: a ConfigMap that `settings-controller render |
            # kubectl apply` wrote carries our label but no owner, and is not ours to remove.
            if seen is not None and seen.managed and seen.owners:
                await self.writer.delete(kind, namespace, name)
                self.metrics.writes.labels(kind).inc()
                log.info("namespace %s: no account claims it; deleted %s", namespace, name)
            self._written.pop((kind, namespace), None)
        if namespace in self.views.namespaces:
            await self.writer.remove_labels(
                "Namespace", namespace, (bodies.LABEL_PLAN, rendering.LABEL_ACCOUNT)
            )
            self.metrics.writes.labels("Namespace").inc()

    # --- the global and its keys -------------------------------------------------

    @property
    def _singleton(self) -> str:
        return self.catalog.kinds[catalog.GLOBAL].singleton_name or "default"

    def _global(self) -> declarations.GlobalSettings | None:
        observed = self.views.globals.get(self._singleton)
        decl = observed.declaration if observed else None
        return decl if isinstance(decl, declarations.GlobalSettings) else None

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

    async def close(self) -> None:
        await self.queue.close()


async def _all(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` at once; raise the first failure once all have ended (none left running)."""
    if len(jobs) == 1:
        await jobs[0]
        return
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


class _Foreign(Exception):
    """An object the operator would write exists and is not the operator's."""
