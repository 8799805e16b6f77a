"""Carrying out the core's decision for one key at a time.

The operator's routes (``operating``) only name the keys a change concerns
(``request``): an account namespace, ``Unclaimed(name)`` for an Account the
core cannot read (it names no namespace), ``GLOBAL`` for the global's own
status. The work queue (``queueing``) hands each to ``sync``, which for a
namespace asks the core (``decisions.decide``) what its fate is and executes
it: render and apply what differs from what was last seen (``generated``),
keep the outputs of a namespace in conflict, or remove the outputs an account
left behind when it was deleted or moved. Statuses and Events go through
``reporting``. A global or key change is a fan-out: every known namespace
queued once, the same workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from controller.cluster import manifests, metrics, reporting, statuses
from controller.cluster.runtime import clients, generated, queueing, records, secrets
from controller.core import (
    catalog,
    connections,
    credentials,
    decisions,
    declarations,
    findings,
    merging,
    rendering,
)

log = logging.getLogger(__name__)

Verdict = decisions.Verdict

# At most one forced sync (the force re-sync annotation) per object asking and namespace
# in this many seconds: a tenant may patch its IntegrationSettings, so a new annotation value every
# second would otherwise set the operator's write rate (ConfigMap, Secret and namespace
# labels each time). Later requests in the window are one normal sync, which writes
# only what changed.
FORCE_INTERVAL = 10.0
QUEUE = "account"  # the work queue's and controller's name in controller-runtime's metrics


@dataclasses.dataclass(frozen=True)
class Unclaimed:
    """The key of an Account the core cannot read: it claims no namespace to sync, so its
    status (why it is invalid) is written under its own name."""

    name: str

    def __str__(self) -> str:
        return f"Account {credentials.printable_name(self.name)}"


@dataclasses.dataclass(frozen=True)
class GlobalStatus:
    """The key of the global's own status (Ready, KeysPresent, the singleton rule); a
    changed declaration fans out from there."""

    def __str__(self) -> str:
        return "the global settings"


GLOBAL = GlobalStatus()
Key = str | Unclaimed | GlobalStatus  # a str is an account namespace


@dataclasses.dataclass(frozen=True)
class Views:
    """Read-only views of the custom resources (``resources``), the generated objects
    and the labelled namespaces (``generated``)."""

    globals: Mapping[str, records.Observed]  # by name
    accounts: Mapping[str, records.Observed]  # by name
    tenants: Mapping[str, Mapping[str, records.Observed]]  # namespace -> the Accounts claiming it
    overrides: Mapping[str, Mapping[str, records.Observed]]  # namespace -> its overrides by name
    configmaps: Mapping[str, records.Digest]  # by namespace (generated.Digests)
    secrets: Mapping[str, records.Digest]  # by namespace (generated.Digests)
    namespaces: Mapping[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict
    )  # namespace -> (plan, account) labels (generated.Namespaces)


class Reconciler:
    def __init__(
        self,
        cat: catalog.Catalog,
        writer: clients.Writer,
        keys: secrets.PlatformKeys,
        views: Views,
        meter: metrics.Metrics,
        concurrency: int = 16,
        backoff: queueing.Backoff[Key] | None = None,
        bucket: queueing.Bucket | None = None,
        autostart: bool = True,
    ) -> None:
        self.catalog = cat
        self.writer = writer
        self.keys = keys
        self.views = views
        self.world = records.World(views.tenants, views.overrides)
        self.metrics = meter
        self.reporter = reporting.Reporter(writer, meter)
        # ``autostart`` False: no worker runs until ``queue.start()``, which the operator
        # calls once every cache is listed (before that, a namespace would look unclaimed
        # and its outputs be removed, or its outputs missing and every one be rewritten).
        self.queue: queueing.WorkQueue[Key] = queueing.WorkQueue(
            self.sync,
            concurrency,
            backoff,
            bucket,
            on_retry=lambda key, delay: meter.retries.inc(),
            meter=meter.queue(QUEUE, concurrency),
            autostart=autostart,
        )
        # Set by each fan-out: ``count_full_passes`` marks the pass done once it drained.
        self.fanned_out = asyncio.Event()
        # What was written and not yet echoed, by (kind, namespace): an output's
        # (content hash, owner uid), a Namespace's (plan, account) labels. The
        # watch event that echoes our own write needs no reconcile.
        self._written: dict[tuple[str, str], tuple[str, str]] = {}
        self._last_global: declarations.GlobalSettings | None = None
        # Namespaces whose next sync writes every output whatever the views say (the
        # force re-sync annotation): an edit the views do not record is repaired too.
        self._forced: set[str] = set()
        # requester|namespace -> when its last forced sync was granted
        self._forced_at: dict[str, float] = {}
        self.clock = time.monotonic  # tests move it
        # The connection checks' answers for every key, None until each has one or with
        # the checks off (``connections.ConnectionChecker.settled``): read for the
        # ``connected`` statuses.
        self.connection_answers: Callable[[], Mapping[str, connections.Outcome] | None] = lambda: (
            None
        )
        self.renders = 0  # namespaces synced since start (operating compacts after bursts)
        # While a fan-out's pass runs, each write is logged at DEBUG and the pass ends
        # with one INFO line counting them (``_pass_done``): a formatted, redacted JSON
        # line per write was ~6 % of the operator's CPU in a fan-out (tests/bench
        # --profile). Outside a pass (an edit, a new account) each write is an INFO line.
        self._passing: tuple[str, float] | None = None  # (why, when it started)
        self._pass_writes: dict[str, int] = {}
        meter.count_queue(lambda: self.queue.depth, self.queue.oldest)

    # --- what the routes call (operating) ---------------------------------------

    def request(self, key: Key) -> None:
        """Sync ``key`` soon (once, if it is already waiting)."""
        self.queue.add(key)

    def force(self, namespace: str, requester: str = "") -> bool:
        """Sync ``namespace`` soon, applying its outputs even where they look current: at
        most once per ``FORCE_INTERVAL`` for each object that asks (``requester``: an
        Account, an IntegrationSettings, the global; a tenant has at most one
        IntegrationSettings per integration type); within it, a normal sync (coalesced
        with any waiting). Whether this one is forced."""
        now = self.clock()
        window = f"{requester}|{namespace}"
        last = self._forced_at.get(window)
        granted = last is None or now - last >= FORCE_INTERVAL
        if granted:
            if len(self._forced_at) >= 4096:  # forget the windows that have passed
                self._forced_at = {
                    w: at for w, at in self._forced_at.items() if now - at < FORCE_INTERVAL
                }
            self._forced_at[window] = now
            self._forced.add(namespace)
        self.request(namespace)
        return granted

    def account_changed(
        self, before: records.Observed | None, after: records.Observed | None
    ) -> None:
        """An Account changed (None: absent): settle the namespace it claims and the one
        it claimed before (a move or a deletion leaves outputs there); one the core
        cannot read has its status written under its name."""
        if after is not None and not isinstance(after.declaration, declarations.Account):
            self.request(Unclaimed(after.name))
        for namespace in sorted({o.claims for o in (before, after) if o and o.claims}):
            self.request(namespace)
        if after is None and before is not None:
            self.reporter.forget(catalog.ACCOUNT, None, before.name)

    async def account_invalid(self, observed: records.Observed) -> None:
        """An Account the core cannot read (no namespace to queue): say why on it."""
        reason, message = statuses.problems(observed)
        await self.reporter.status(observed, statuses.blocked(observed, reason, message))

    def override_changed(self, namespace: str, name: str, deleted: bool = False) -> None:
        if deleted:
            self.reporter.forget(catalog.OVERRIDE, namespace, name)
        self.request(namespace)

    async def global_changed(self) -> None:
        """The global changed: its status, then every namespace if its declaration changed,
        until they are synced (callers that await it; the operator queues ``GLOBAL``)."""
        await self.global_status()
        if self._global_moved():
            await self.everything("global settings changed")

    def _global_moved(self) -> bool:
        """Whether the global's declaration differs from the one last fanned out for."""
        current = self._global()
        if current != self._last_global or current is None:
            self._last_global = current
            return True
        return False

    def keys_changed(self, names: Collection[str]) -> bool:
        """Platform key Secrets changed: only a referenced one matters (the global's status,
        then a fan-out, both queued). Whether one did."""
        decl = self._global()
        if decl is None:
            return False
        referenced = {
            ref.secret_name for i in decl.integrations.values() for ref in i.credentials.values()
        }
        if not referenced & set(names):
            return False
        self.request(GLOBAL)
        self.fan_out("platform key Secret changed")
        return True

    async def everything(self, why: str, force: bool = False) -> None:
        """Queue every namespace anything is known about, and wait until they are synced
        (``force``: applying their outputs even where they look current)."""
        self.fan_out(why, force)
        await self.queue.settled()
        self._pass_done()

    async def count_full_passes(self) -> None:
        """Mark each fan-out's pass done once the queue has drained it (runs until cancelled:
        a fan-out started by a watch or a worker never waits for its own pass)."""
        while True:
            await self.fanned_out.wait()
            self.fanned_out.clear()
            await self.queue.settled()
            self._pass_done()

    def _pass_done(self) -> None:
        self.metrics.full_pass_done()
        if self._passing is None:
            return
        (why, started), self._passing = self._passing, None
        writes, self._pass_writes = self._pass_writes, {}
        wrote = ", ".join(f"{n} {kind}" for kind, n in sorted(writes.items())) or "nothing"
        log.info(
            "synced every namespace (%s) in %.1fs: wrote %s", why, self.clock() - started, wrote
        )

    def fan_out(self, why: str, force: bool = False) -> None:
        """Queue every namespace anything is known about (``force``: applying their outputs
        even where they look current); returns at once."""
        namespaces = (
            set(self.views.tenants)
            | set(self.views.overrides)
            | {ns for ns, seen in self.views.configmaps.items() if seen.managed or seen.generated}
            | {ns for ns, seen in self.views.secrets.items() if seen.managed or seen.generated}
            | set(self.views.namespaces)
        )
        self.metrics.fanout.observe(len(namespaces))
        self.metrics.accounts.set(len(self.views.accounts))
        log.info("syncing %d namespaces: %s", len(namespaces), why)
        if self._passing is None:
            self._passing = (why, self.clock())
        for namespace in sorted(namespaces):
            if force:
                self.force(namespace, "global")
            else:
                self.request(namespace)
        self.fanned_out.set()

    def generated_changed(self, kind: str, changes: Collection[generated.Change]) -> None:
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

    def namespaces_changed(self, changed: Collection[str]) -> None:
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
            await self.sync(Unclaimed(name))
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

    async def sync(self, key: Key) -> queueing.Result:
        """The queue's step (controller-runtime's ``Reconcile``): decide the fate of ``key``
        and carry it out; raises to be retried after a backoff."""
        if isinstance(key, GlobalStatus):
            await self.global_status()
            if self._global_moved():
                self.fan_out("global settings changed")
            return queueing.DONE
        if isinstance(key, Unclaimed):
            observed = self.views.accounts.get(key.name)
            if observed is not None and not isinstance(observed.declaration, declarations.Account):
                await self.account_invalid(observed)
            return queueing.DONE
        await self._sync_namespace(key)
        return queueing.DONE

    async def _sync_namespace(self, namespace: str) -> None:
        started = time.perf_counter()
        outcome = "failed"
        forced = namespace in self._forced
        try:
            outcome = await self._sync(namespace, forced)
            self._forced.discard(namespace)
        finally:
            self.metrics.reconciled(namespace, outcome)
            self.renders += 1
            self.metrics.duration.observe(time.perf_counter() - started)

    async def _sync(self, namespace: str, forced: bool = False) -> str:
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
            wrote = await self._write(observed, account, global_, result, forced)
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
            # Nothing of theirs is applied either: not the Applied of an older generation.
            waiting = (
                f"account {credentials.printable_name(account.name)} is not ready "
                f"({findings.Reason.OUTPUT_CONFLICT.value}): "
                "these overrides are not applied until it is"
            )
            for o in overrides:
                await self.reporter.status(
                    o, statuses.blocked(o, statuses.ACCOUNT_NOT_READY, waiting)
                )
            return "blocked"

        missing = statuses.missing_keys(global_, result, self.keys)
        self.metrics.keys_missing(namespace, bool(missing))
        plan_notes = [
            f
            for f in result.findings
            if f.ref == account.ref
            and f.reason in (findings.Reason.PLAN_FORBIDS, findings.Reason.UNKNOWN_PLAN)
        ]
        settled = self.connection_answers()
        connected = (
            None
            if settled is None
            else connections.services_connected(self.catalog, result, settled)
        )
        # Each object's status is its own request: at once, like the outputs. Each is
        # decoded once, for computing it and for comparing (a json.loads per object and
        # use was ~5 % of a fan-out's CPU, tests/bench --profile). Only a status that
        # says something new is handed to the reporter: in a fan-out nearly none does,
        # and gathering an account's and its override's unchanged statuses made two
        # tasks per namespace for nothing (~3 % of the profile).
        current = observed.status
        reports = [
            (
                observed,
                statuses.account(observed, result, namespace, missing, connected, current),
                current,
            )
        ]
        for o in overrides:
            seen = o.status
            reports.append((o, statuses.override(o, result, plan_notes, connected, seen), seen))
        jobs = [
            self.reporter.status(o, status, seen)
            for o, status, seen in reports
            if self.reporter.says_something_new(status, seen)
        ]
        await _all(jobs)
        return "written" if wrote else "unchanged"

    async def _write(
        self,
        observed: records.Observed,
        account: declarations.Account,
        global_: declarations.GlobalSettings,
        result: merging.AccountResult,
        forced: bool = False,
    ) -> bool:
        namespace = account.namespace
        seen_configmap = self.views.configmaps.get(namespace)
        seen_secret = self.views.secrets.get(namespace)
        for kind, seen, name in (
            ("ConfigMap", seen_configmap, rendering.CONFIGMAP_NAME),
            ("Secret", seen_secret, rendering.CREDENTIALS_SECRET_NAME),
        ):
            if seen is not None and not seen.generated:
                # Never adopt: the object holds someone else's data, and the
                # Account's ownership would let the garbage collector delete it.
                # What the operator wrote is told by its ownerReference to an Account
                # (this one, or the namespace's former one), not by a label alone.
                raise _Foreign(
                    f"a {kind} named {name} that the operator did not create exists in "
                    f"namespace {namespace}; it is left untouched, and no outputs are written "
                    "there until it is removed or renamed"
                )
        labels = (account.plan, account.name)
        if forced or self.views.namespaces.get(namespace) != labels:
            self._written.pop(("Namespace", namespace), None)
            await self.writer.apply(manifests.namespace(account))
            self._written[("Namespace", namespace)] = labels
            self.metrics.wrote("Namespace")
        # The ConfigMap and the Secret are independent: written at once, an
        # account's writes take two round trips after the namespace, not three.
        writes = []
        data = result.data
        keys = manifests.credential_data(global_, result, self.keys)
        # Server-side apply leaves the keys another field manager added (kubectl
        # patch): what is not rendered is removed first, so the outputs are exactly
        # the render. Nothing is written when there is none (a restart writes nothing).
        for kind, seen, rendered in (
            ("ConfigMap", seen_configmap, data),
            ("Secret", seen_secret, keys),
        ):
            await self._remove_foreign_keys(kind, namespace, seen, rendered)
        # Each output's hash once: it decides the write, is the ConfigMap's annotation
        # and tells the watch's echo of the write from an edit (~3 % of a fan-out's
        # CPU when computed at each of those places).
        data_hash, keys_hash = rendering.content_hash(data), rendering.content_hash(keys)
        if forced or not manifests.in_sync(seen_configmap, data_hash, observed.uid, account.plan):
            writes.append(
                self._apply(
                    "ConfigMap",
                    namespace,
                    manifests.configmap(observed, namespace, data, account.plan, data_hash),
                    data_hash,
                    observed.uid,
                    f"account {account.name}: wrote {namespace}/{rendering.CONFIGMAP_NAME}",
                )
            )
        if forced or not manifests.in_sync(seen_secret, keys_hash, observed.uid):
            writes.append(
                self._apply(
                    "Secret",
                    namespace,
                    manifests.credentials_secret(observed, namespace, keys),
                    keys_hash,
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
        self.metrics.wrote(kind)
        if self._passing is not None:
            self._pass_writes[kind] = self._pass_writes.get(kind, 0) + 1
            if done:
                log.debug("%s", done)
        elif done:
            log.info("%s", done)

    async def _remove_foreign_keys(
        self, kind: str, namespace: str, seen: records.Digest | None, rendered: Mapping[str, str]
    ) -> None:
        if seen is None:
            return
        data_keys, binary_keys = seen.foreign_keys(rendered)
        if not data_keys and not binary_keys:
            return
        name = (
            rendering.CONFIGMAP_NAME if kind == "ConfigMap" else rendering.CREDENTIALS_SECRET_NAME
        )
        await self.writer.remove_keys(kind, namespace, name, data_keys, binary_keys)
        self.metrics.wrote(kind)
        # A key name may be a pasted key: named only when it does not look like one.
        removed = ", ".join(credentials.printable_name(k) for k in (*data_keys, *binary_keys))
        log.info(
            "%s %s/%s: removed keys the operator did not write: %s", kind, namespace, name, removed
        )

    async def _remove(self, namespace: str) -> None:
        """No account claims ``namespace``: what an account generated there goes."""
        for kind, seen, name in (
            ("ConfigMap", self.views.configmaps.get(namespace), rendering.CONFIGMAP_NAME),
            ("Secret", self.views.secrets.get(namespace), rendering.CREDENTIALS_SECRET_NAME),
        ):
            # Only what an Account owns: a ConfigMap that `settings-controller render |
            # kubectl apply` wrote carries our label but no owner, and is not ours to remove.
            if seen is not None and seen.generated:
                await self.writer.delete(kind, namespace, name)
                self.metrics.wrote(kind)
                log.info("namespace %s: no account claims it; deleted %s", namespace, name)
            self._written.pop((kind, namespace), None)
        if namespace in self.views.namespaces:
            await self.writer.remove_labels(
                "Namespace", namespace, (records.LABEL_PLAN, rendering.LABEL_ACCOUNT)
            )
            self.metrics.wrote("Namespace")

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
    if not jobs:
        return
    if len(jobs) == 1:
        await jobs[0]
        return
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


class _Foreign(Exception):
    """An object the operator would write exists and is not the operator's."""
