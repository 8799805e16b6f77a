"""Starting and stopping the operator: kopf's settings, the client, what is followed, the resync.

Everything the reconciler reads is followed here with a list and a watch
(``following``): the three custom kinds (``resources``), the generated
ConfigMaps and Secrets and the labelled namespaces (``generated``), the
platform key Secrets (``keys``). kopf runs the process around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import logging
import os
import pathlib
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web
import kopf

from controller import schemafiles
from controller.cluster import (
    bodies,
    clients,
    connections,
    following,
    generated,
    keys,
    leases,
    metrics,
    reconciling,
    resources,
)
from controller.core import catalog, declarations, rendering

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    kubeconfig: pathlib.Path | None
    namespace: str  # where the platform key Secrets live
    liveness: str | None  # kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz
    metrics_port: int  # 0: no metrics endpoint
    concurrency: int  # accounts rendered at once in a fan-out
    resync: float  # seconds between full passes that catch anything missed
    keys_timeout: float  # how long start-up waits for the first listing of key Secrets
    verbose: bool
    verify_interval: float = connections.DEFAULT_INTERVAL  # key checks; 0: off
    verify_timeout: float = connections.DEFAULT_TIMEOUT
    metrics_address: str = "0.0.0.0"  # the interface metrics_port listens on
    # Namespaces no Account may claim (keys would be copied there).
    reserved_namespaces: tuple[str, ...] = declarations.RESERVED_NAMESPACES


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings, once, each with the reason it is not the default."""
    # kopf's peering is not used: with equal priorities every replica pauses.
    # A Lease (controller.cluster.leases, taken in ``start``) elects the one
    # replica that watches and writes; the Deployment still runs one, Recreate.
    settings.peering.standalone = True
    # kopf follows no resource (``resources`` does), so it adds no finalizer;
    # should one ever be added, it carries our name rather than kopf's.
    settings.persistence.finalizer = f"{catalog.GROUP}/operator"
    # Change-detecting handlers are not used, so kopf stores no diff base. If
    # one is ever added, neither overrides (which may hold a pasted key) nor a
    # Secret's data may be copied into the last-handled-configuration annotation.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=catalog.GROUP,
        key="last-handled-configuration",
        ignored_fields=["spec.overrides", "data", "stringData"],
    )
    # Handler progress, likewise unused, goes under our prefix too.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=catalog.GROUP)
    # The reconciler posts its own Events with fixed reasons and value-free
    # messages; kopf's would quote exception texts.
    settings.posting.enabled = False
    # Fail a hung request quickly: the reconciler retries and the resync catches up.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.watching.connect_timeout = 10
    # Exit within the Deployment's terminationGracePeriodSeconds (30).
    settings.process.ultimate_exiting_timeout = 25


async def start(memo: kopf.Memo) -> None:
    options: Options = memo.options
    client = clients.Client.connect(options.kubeconfig, memo.catalog)
    meter: metrics.Metrics = memo.metrics
    if options.metrics_port:
        meter.serve(options.metrics_port, options.metrics_address)
    memo.client = client
    # Stand by until this replica holds the Lease. kopf runs startup handlers
    # before it starts any watch (its root tasks wait for them), so a standby
    # neither watches nor writes. kopf's own liveness endpoint starts only
    # after startup too: answer it meanwhile, a standby is alive.
    elector = leases.Elector(client, options.namespace, on_change=meter.leader.set)
    meter.leader.set(0)
    memo.elector = elector
    probe = await _standby_liveness(options.liveness)
    try:
        await elector.acquire()
    except BaseException:
        await client.close()
        raise
    finally:
        if probe is not None:
            await probe.cleanup()
    store = keys.KeyStore()
    observe = functools.partial(bodies.observe, memo.catalog, reserved=options.reserved_namespaces)
    globals_ = resources.Resources(catalog.GLOBAL, observe)
    accounts = resources.Resources(catalog.ACCOUNT, observe, group=lambda o: o.claims)
    overrides = resources.Resources(catalog.OVERRIDE, observe)
    configmaps, secrets = generated.Digests("ConfigMap"), generated.Digests("Secret")
    namespaces = generated.Namespaces()
    views = reconciling.Views(
        globals=globals_.named,
        accounts=accounts.named,
        tenants=accounts.grouped,
        overrides=overrides.grouped,
        configmaps=configmaps,
        secrets=secrets,
        namespaces=namespaces,
    )
    followed = (globals_, accounts, overrides, configmaps, secrets, namespaces)
    reconciler = reconciling.Reconciler(
        memo.catalog,
        client,
        store,
        views,
        meter,
        concurrency=options.concurrency,
        listed=tuple(f.ready for f in followed),
    )
    memo.key_store, memo.reconciler = store, reconciler
    memo.tasks = [
        asyncio.create_task(_lead(elector)),
        asyncio.create_task(
            keys.follow(
                client,
                options.namespace,
                store,
                connections.on_keys(reconciler.keys_changed, memo),
                on_error=meter.errors.labels("keys").inc,
            )
        ),
    ]
    # The first statuses and renders should see the keys: wait for their first
    # listing before following anything (a global judged before it would say its
    # keys are missing, then take it back: two status writes and a Warning).
    try:
        await asyncio.wait_for(store.ready.wait(), options.keys_timeout)
    except TimeoutError:
        log.warning(
            "the Secrets in %s are not listed yet; accounts render without keys until they are",
            options.namespace,
        )
    memo.tasks += [
        *(
            asyncio.create_task(_follow_resources(client, kind, changed, meter))
            for kind, changed in (
                (globals_, functools.partial(_globals_changed, memo)),
                (accounts, functools.partial(_accounts_changed, memo)),
                (overrides, functools.partial(_overrides_changed, memo)),
            )
        ),
        *(
            asyncio.create_task(_follow_generated(client, digests, name, reconciler, meter))
            for digests, name in (
                (configmaps, rendering.CONFIGMAP_NAME),
                (secrets, rendering.CREDENTIALS_SECRET_NAME),
            )
        ),
        asyncio.create_task(
            following.follow(
                "Namespaces labelled with a plan",
                lambda: client.list_labelled(
                    "Namespace", bodies.LABEL_PLAN, generated.namespace_labels
                ),
                lambda version: client.watch_labelled("Namespace", bodies.LABEL_PLAN, version),
                namespaces,
                reconciler.namespaces_changed,
                on_error=meter.errors.labels("watch").inc,
            )
        ),
        asyncio.create_task(_listed(followed)),
        asyncio.create_task(_resync(reconciler, options.resync)),
        asyncio.create_task(_compact_after_bursts(reconciler)),
        *connections.start(
            memo, client, store, views, options.verify_interval, options.verify_timeout
        ),
    ]
    log.info("started: platform keys from namespace %s", options.namespace)


async def _listed(followed: tuple[Any, ...]) -> None:
    """Say once when everything is listed: renders start then, not before."""
    started = time.perf_counter()
    for f in followed:
        await f.ready.wait()
    log.info(
        "listed in %.1fs: %s",
        time.perf_counter() - started,
        ", ".join(f"{len(f)} {f.kind}" for f in followed),
    )


async def _follow_resources(
    client: clients.Client,
    store: resources.Resources,
    changed: Callable[[list[resources.Change]], Awaitable[None]],
    meter: metrics.Metrics,
) -> None:
    await following.follow(
        f"{store.kind} objects",
        lambda: client.list_every(store.kind, store.observe),
        lambda version: client.watch_every(store.kind, version),
        store,
        changed,
        on_error=meter.errors.labels("watch").inc,
    )


async def _globals_changed(memo: kopf.Memo, changes: list[resources.Change]) -> None:
    for _, after in changes:
        if after is not None:
            # first: a global change may start a long fan-out
            connections.global_seen(memo, after)
    # Status changes too: the connection checker patches the same conditions,
    # and a stale view of them may have dropped ours.
    await memo.reconciler.global_changed()


async def _accounts_changed(memo: kopf.Memo, changes: list[resources.Change]) -> None:
    for before, after in changes:
        # The echo of our own status patch (or anyone's) renders nothing.
        if bodies.same_but_status(before, after):
            continue
        seen = after or before
        assert seen is not None
        await memo.reconciler.account_changed(before, after)
        connections.account_seen(memo, seen.name)


async def _overrides_changed(memo: kopf.Memo, changes: list[resources.Change]) -> None:
    for before, after in changes:
        if bodies.same_but_status(before, after):
            continue
        seen = after or before
        assert seen is not None
        namespace = str(seen.namespace)
        memo.reconciler.override_changed(namespace, seen.name, deleted=after is None)
        connections.namespace_seen(memo, namespace)


async def _follow_generated(
    client: clients.Client,
    digests: generated.Digests,
    name: str,
    reconciler: reconciling.Reconciler,
    meter: metrics.Metrics,
) -> None:
    async def changed(changes: list[generated.Change]) -> None:
        await reconciler.generated_changed(digests.kind, changes)

    await following.follow(
        f"{digests.kind}s named {name}",
        lambda: client.list_named(digests.kind, name, bodies.digest),
        lambda version: client.watch_named(digests.kind, name, version),
        digests,
        changed,
        on_error=meter.errors.labels("watch").inc,
    )


async def _standby_liveness(endpoint: str | None) -> aiohttp.web.AppRunner | None:
    """Answer the liveness URL with 200 until kopf's own endpoint takes the port over."""
    if not endpoint:
        return None
    parts = urllib.parse.urlsplit(endpoint)

    async def alive(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"standby": True})

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", alive)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 80).start()
    return runner


async def _lead(elector: leases.Elector) -> None:
    """Renew the Lease; when it is lost, stop the operator as Kubernetes would (SIGTERM)."""
    try:
        await elector.keep()
    except leases.LeaseLost as e:
        log.error("lost the leader lease (%s): stopping; the restart stands by", e)
        os.kill(os.getpid(), signal.SIGTERM)


async def _resync(reconciler: reconciling.Reconciler, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await reconciler.everything("periodic resync")
        except Exception:
            log.exception("periodic resync failed")


async def _compact_after_bursts(
    reconciler: reconciling.Reconciler, quiet: float = 3.0, burst: int = 1000
) -> None:
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


async def stop(memo: kopf.Memo) -> None:
    for task in memo.get("tasks", ()):
        task.cancel()
    for task in memo.get("tasks", ()):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "reconciler" in memo:
        await memo.reconciler.close()
    await connections.stop(memo)
    if "elector" in memo:
        # After the last write: a standby may start writing as soon as this lands.
        await memo.elector.release()
    if "client" in memo:
        await memo.client.close()
    log.info("stopped")


def keys_listed(memo: kopf.Memo) -> bool:
    return "key_store" in memo and bool(memo.key_store.ready.is_set())


def run(options: Options, registry: kopf.OperatorRegistry) -> None:
    """Run until SIGTERM/SIGINT; kopf then runs the cleanup handler and exits."""
    logging.getLogger().handlers.clear()
    kopf.configure(verbose=options.verbose, log_format=kopf.LogFormat.JSON)
    if not options.verbose:
        # One line per HTTP request and per handled watch event drowns what
        # matters at scale; failures are still logged as warnings.
        for name in ("kopf.objects",):
            logging.getLogger(name).setLevel(logging.WARNING)
    memo = kopf.Memo(options=options, catalog=schemafiles.load_catalog(), metrics=metrics.Metrics())
    kopf.run(
        registry=registry,
        clusterwide=True,
        standalone=True,
        liveness_endpoint=options.liveness,
        memo=memo,
    )
