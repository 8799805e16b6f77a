"""The operator: what it follows, which change enqueues which key, and its named tasks.

One ``Operator`` owns the stores (``runtime.resources``, ``runtime.generated``,
``runtime.secrets``), the account reconciler's queue (``reconciling``) and the
connection checks (``connections``). ``routes`` is the one table that says, as
controller-runtime's builder does (``For``, ``Owns``, ``Watches``), which
followed change enqueues which key; a route only enqueues (it never awaits a
write or the queue). ``start`` takes the Lease, follows everything, waits
once until every cache is listed, and only then starts the workers, the
resync and the connection checks, each a named root task (``runtime.supervising``): one
that dies stops the process (exit 1). A lost Lease stops it too (exit 0: the
restart stands by). kopf is only the process host (``hosting``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import logging
import pathlib
import time
from collections.abc import Callable, Coroutine, Sized
from typing import Any, Protocol

from controller.cluster import connections, metrics, reconciling
from controller.cluster.runtime import (
    clients,
    following,
    generated,
    leases,
    records,
    resources,
    secrets,
    supervising,
)
from controller.core import catalog, declarations, rendering

log = logging.getLogger(__name__)

# On an Account, an IntegrationSettings or the global: any new value re-syncs the
# namespace(s) concerned once, applying every output even where it looks current.
RECONCILE_ANNOTATION = f"{catalog.GROUP}/reconcile-requested-at"


@dataclasses.dataclass(frozen=True)
class Election:
    """The leader election's flags (client-go's names and defaults)."""

    enabled: bool = True
    name: str = leases.NAME
    namespace: str | None = None  # None: the operator's --namespace
    duration: float = leases.DURATION
    renew_deadline: float = leases.RENEW_DEADLINE
    retry: float = leases.RETRY


@dataclasses.dataclass(frozen=True)
class Options:
    kubeconfig: pathlib.Path | None
    namespace: str  # where the platform key Secrets live
    probe_address: tuple[str, int] | None  # /healthz and /readyz; None: none
    metrics_address: tuple[str, int] | None  # /metrics; host "": every interface
    concurrency: int  # accounts rendered at once in a fan-out
    resync: float  # seconds between full passes that catch anything missed
    keys_timeout: float  # how long start-up waits for the first listing of key Secrets
    log_level: str = "info"
    log_format: str = "json"  # or text
    metrics_secure: bool = True  # HTTPS and the TokenReview/SubjectAccessReview filter
    metrics_cert_dir: pathlib.Path | None = None  # tls.crt, tls.key; None: self-signed
    election: Election = Election()
    connection_check_interval: float = connections.DEFAULT_INTERVAL  # 0: no checks at all
    connection_check_timeout: float = connections.DEFAULT_TIMEOUT
    # Namespaces no Account may claim (keys would be copied there).
    reserved_namespaces: tuple[str, ...] = declarations.RESERVED_NAMESPACES
    # Start even when the admission policies do not hold the operator (``confinement``).
    allow_unconfined: bool = False


class Cache(Sized, Protocol):
    """A store a route fills: listed once (``ready``) before any worker starts."""

    @property
    def ready(self) -> asyncio.Event: ...


@dataclasses.dataclass(frozen=True)
class Route:
    """One ``Watches(source, handler)``: what is followed into which cache, and the map
    from a change to the keys it enqueues (it never awaits)."""

    source: str  # the root task's name
    cache: Cache
    follow: Callable[[Callable[[Any], Coroutine[Any, Any, None]]], Coroutine[Any, Any, None]]
    enqueue: Callable[[Any], None]
    enqueues: str  # what ``enqueue`` queues, in the builder's words


class Operator:
    def __init__(
        self,
        options: Options,
        cat: catalog.Catalog,
        client: clients.Client,
        meter: metrics.Metrics,
        stop: Callable[[], None],
    ) -> None:
        """Everything the operator holds, built without I/O; ``stop`` asks the host to
        stop the process (kopf's stop flag)."""
        self.options, self.catalog, self.client, self.metrics = options, cat, client, meter
        self._stop = stop
        self.supervisor = supervising.Supervisor(on_failure=stop)
        election = options.election
        self.elector = (
            leases.Elector(
                client,
                election.namespace or options.namespace,
                name=election.name,
                duration=int(election.duration),
                renew=min(leases.RENEW, election.renew_deadline / 2),
                renew_deadline=election.renew_deadline,
                retry=election.retry,
                on_change=meter.leading,
            )
            if election.enabled
            else None
        )
        observe = functools.partial(records.observe, cat, reserved=options.reserved_namespaces)
        self.globals = resources.Resources(catalog.GLOBAL, observe)
        self.accounts = resources.Resources(catalog.ACCOUNT, observe, group=lambda o: o.claims)
        self.overrides = resources.Resources(catalog.OVERRIDE, observe)
        self.configmaps = generated.Digests("ConfigMap")
        self.credentials = generated.Digests("Secret")
        self.namespaces = generated.Namespaces()
        self.platform_keys = secrets.SecretStore()
        self.views = reconciling.Views(
            globals=self.globals.named,
            accounts=self.accounts.named,
            tenants=self.accounts.grouped,
            overrides=self.overrides.grouped,
            configmaps=self.configmaps,
            secrets=self.credentials,
            namespaces=self.namespaces,
        )
        # Every cache the reconciler reads, in the order the "listed" line names them.
        self.caches: tuple[Any, ...] = (
            self.globals,
            self.accounts,
            self.overrides,
            self.configmaps,
            self.credentials,
            self.namespaces,
        )
        self.reconciler = reconciling.Reconciler(
            cat,
            client,
            self.platform_keys,
            self.views,
            meter,
            concurrency=options.concurrency,
            autostart=False,
        )
        # Made in ``start``: its HTTP session needs the running loop.
        self.checker: connections.ConnectionChecker | None = None
        self.following = False  # past the Lease: the routes run

    # --- the routes: which change enqueues which key ---------------------------------

    def routes(self) -> tuple[Route, ...]:
        c, on_error = self.client, self.metrics.errors.labels("watch").inc
        return (
            Route(
                "platform key Secrets",
                self.platform_keys,
                lambda changed: following.secrets_in(
                    c,
                    self.options.namespace,
                    self.platform_keys,
                    changed,
                    on_error=self.metrics.errors.labels("keys").inc,
                ),
                self._keys_changed,
                "Watches(Secret in --namespace) -> GLOBAL, then every namespace, if the global uses it",
            ),
            Route(
                "GlobalIntegrationSettings objects",
                self.globals,
                lambda changed: following.resources_of(c, self.globals, changed, on_error),
                self._globals_changed,
                "For(GlobalIntegrationSettings) -> GLOBAL; a new re-sync annotation: every namespace",
            ),
            Route(
                "Account objects",
                self.accounts,
                lambda changed: following.resources_of(c, self.accounts, changed, on_error),
                self._accounts_changed,
                "For(Account) -> the namespace it claims and the one it claimed, or Unclaimed(name)",
            ),
            Route(
                "IntegrationSettings objects",
                self.overrides,
                lambda changed: following.resources_of(c, self.overrides, changed, on_error),
                self._overrides_changed,
                "For(IntegrationSettings) -> its namespace",
            ),
            Route(
                f"ConfigMaps named {rendering.CONFIGMAP_NAME}",
                self.configmaps,
                lambda changed: following.named(
                    c, self.configmaps, rendering.CONFIGMAP_NAME, changed, on_error
                ),
                functools.partial(self.reconciler.generated_changed, "ConfigMap"),
                "Owns(ConfigMap) -> its namespace, unless the echo of our own write",
            ),
            Route(
                f"Secrets named {rendering.CREDENTIALS_SECRET_NAME}",
                self.credentials,
                lambda changed: following.named(
                    c, self.credentials, rendering.CREDENTIALS_SECRET_NAME, changed, on_error
                ),
                functools.partial(self.reconciler.generated_changed, "Secret"),
                "Owns(Secret) -> its namespace, unless the echo of our own write",
            ),
            Route(
                "Namespaces labelled with a plan",
                self.namespaces,
                lambda changed: following.namespaces(c, self.namespaces, changed, on_error),
                self.reconciler.namespaces_changed,
                "Watches(Namespace with a plan label) -> that namespace, unless our own labels",
            ),
        )

    def _keys_changed(self, names: frozenset[str]) -> None:
        # The connection checks first: a re-check of a changed key is scheduled before the fan-out.
        if self.checker is not None:
            self.checker.refresh()
        self.reconciler.keys_changed(names)

    def _globals_changed(self, changes: list[resources.Change]) -> None:
        forced = False
        for before, after in changes:
            if after is not None and self.checker is not None:
                self.checker.global_seen(after)
            forced = forced or _resync_requested(before, after)
        # Status changes too: someone may have edited ours (each writer applies only its
        # own status fields, so the connection checker's writes never drop ours).
        self.reconciler.request(reconciling.GLOBAL)
        if forced:
            log.info("re-sync of every account requested (annotation %s)", RECONCILE_ANNOTATION)
            self.reconciler.fan_out("re-sync requested on the global", force=True)

    def _accounts_changed(self, changes: list[resources.Change]) -> None:
        for before, after in changes:
            # The echo of our own status patch (or anyone's) renders nothing.
            if records.same_but_status(before, after):
                continue
            seen = after or before
            assert seen is not None
            if _resync_requested(before, after) and seen.claims:
                self._force(seen.claims, f"Account/{seen.name}", f"account {seen.name}")
            self.reconciler.account_changed(before, after)

    def _overrides_changed(self, changes: list[resources.Change]) -> None:
        for before, after in changes:
            if records.same_but_status(before, after):
                continue
            seen = after or before
            assert seen is not None
            namespace = str(seen.namespace)
            if _resync_requested(before, after):
                self._force(
                    namespace,
                    f"IntegrationSettings/{namespace}/{seen.name}",
                    f"IntegrationSettings {namespace}/{seen.name}",
                )
            self.reconciler.override_changed(namespace, seen.name, deleted=after is None)

    def _force(self, namespace: str, requester: str, said: str) -> None:
        forced = self.reconciler.force(namespace, requester)
        log.log(
            logging.INFO if forced else logging.DEBUG,
            "%s: re-sync requested (annotation %s)%s",
            said,
            RECONCILE_ANNOTATION,
            ""
            if forced
            else f": within {reconciling.FORCE_INTERVAL:g} s of the last, a normal sync",
        )

    # --- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        """Stand by for the Lease, follow everything, wait until every cache is listed,
        then start the workers, the resync and the connection checks."""
        options, meter = self.options, self.metrics
        self.client.on_event = lambda outcome: meter.events.labels(outcome).inc()
        # Stand by until this replica holds the Lease. kopf runs startup handlers
        # before it starts any root task of its own, so a standby neither watches nor
        # writes; the probes (``serving``) answer meanwhile.
        if self.elector is not None:
            meter.leading(False)
            await self.elector.acquire()
            self.supervisor.start("leader lease", self._lead(self.elector))
        else:
            log.info("leader election off (--leader-elect=false): this replica writes")
            meter.leading(True)
        if options.connection_check_interval > 0:
            self.checker = connections.ConnectionChecker(
                self.catalog,
                self.client,
                self.platform_keys,
                self.views,
                meter,
                options.connection_check_interval,
                options.connection_check_timeout,
            )
            # The accounts' ``connected`` is the reconciler's to write, from the checker's
            # answers: a flip fans out (each account's status written if it changed).
            self.reconciler.connection_answers = self.checker.settled
            self.checker.on_connected = functools.partial(
                self.reconciler.fan_out, "a connection check's answer changed"
            )
        else:
            log.info("connection checks are off (--connection-check-interval 0)")
        started = time.perf_counter()
        self.following = True
        for route in self.routes():
            log.debug("route %s: %s", route.source, route.enqueues)
            self.supervisor.start(f"follow {route.source}", route.follow(_enqueuing(route.enqueue)))
        # Once, before any worker: a namespace judged from a partial cache would look
        # unclaimed (its outputs removed) or its outputs missing (every one rewritten).
        for cache in self.caches:
            await cache.ready.wait()
        log.info(
            "listed in %.1fs: %s",
            time.perf_counter() - started,
            ", ".join(f"{len(c)} {c.kind}" for c in self.caches),
        )
        # The first statuses and renders should see the keys (a global judged before
        # would say its keys are missing, then take it back: two writes and a Warning).
        try:
            remaining = options.keys_timeout - (time.perf_counter() - started)
            await asyncio.wait_for(self.platform_keys.ready.wait(), max(0.0, remaining))
        except TimeoutError:
            log.warning(
                "the Secrets in %s are not listed yet; accounts render without keys until they are",
                options.namespace,
            )
        self.reconciler.queue.start()
        self.supervisor.start("full passes", self.reconciler.count_full_passes())
        self.supervisor.start("resync", self._resync(options.resync))
        self.supervisor.start("compaction", compact_after_bursts(self.reconciler))
        if self.checker is not None:
            self.supervisor.start("connection checks", self.checker.run())
        log.info("started: platform keys from namespace %s", options.namespace)

    async def _lead(self, elector: leases.Elector) -> None:
        """Renew the Lease; when it is lost, stop the process (exit 0: the restart stands by)."""
        try:
            await elector.keep()
        except leases.LeaseLost as e:
            log.error("lost the leader lease (%s): stopping; the restart stands by", e)
            self._stop()
        await asyncio.Event().wait()  # until ``stop`` cancels it: not a dead root task

    async def _resync(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconciler.everything("periodic resync")
            except Exception:
                log.exception("periodic resync failed")

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.reconciler.close()
        if self.checker is not None:
            await self.checker.close()
        if self.elector is not None:
            # After the last write: a standby may start writing as soon as this lands.
            await self.elector.release()
        await self.client.close()
        log.info("stopped")

    # --- what the probes read --------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """Ready: every cache listed (and the key Secrets) while leading, or a standby that
        reached the API server (it takes over within a retry period)."""
        elector = self.elector
        if not self.following:
            if elector is not None and not elector.leader:
                if elector.answered:
                    return True, "ok: standing by for the lease"
                return False, "not ready: the API server has not answered yet"
            return False, "not ready: starting"
        unlisted = [c.kind for c in self.caches if not c.ready.is_set()]
        if not self.platform_keys.ready.is_set():
            unlisted.append("platform key Secrets")
        if unlisted:
            return False, f"not ready: not listed yet: {', '.join(unlisted)}"
        return True, "ok"


def _enqueuing(enqueue: Callable[[Any], None]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """A route's map as ``following``'s callback (which awaits it: here, nothing to await)."""

    async def changed(change: Any) -> None:
        enqueue(change)

    return changed


def _resync_requested(before: records.Observed | None, after: records.Observed | None) -> bool:
    """The force re-sync annotation got a new value (a new object is synced anyway)."""
    if before is None or after is None:
        return False
    value = after.annotations.get(RECONCILE_ANNOTATION)
    return value is not None and value != before.annotations.get(RECONCILE_ANNOTATION)


class _Renders(Protocol):
    @property
    def renders(self) -> int: ...


async def compact_after_bursts(reconciler: _Renders, quiet: float = 3.0, burst: int = 1000) -> None:
    """Once a burst of renders (the start, a fan-out) has been quiet for a while, free what
    it left: cyclic garbage, and the C allocator's free pages.

    What a burst frees stays in the process unless handed back (measured at
    10,000 accounts when kopf still held the listed bodies: RSS after a restart
    339 MiB -> 290 MiB).
    """
    compacted = seen = 0
    while True:
        await asyncio.sleep(quiet)
        renders = reconciler.renders
        if renders == seen and renders - compacted >= burst:
            compacted = renders
            started = time.perf_counter()
            gc.collect()
            _malloc_trim()
            log.debug("compacted after %d renders in %.3fs", renders, time.perf_counter() - started)
        seen = renders


def _malloc_trim() -> None:
    """glibc's malloc_trim(0): return free heap pages to the system (absent elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (musl, macOS): nothing to trim this way
