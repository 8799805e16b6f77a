"""Following a set of objects with a list and a watch, into an in-memory store.

Everything the operator reads is followed this way, not through kopf (why, with
the measurements: ``cluster.hosting``): the custom kinds (``resources_of``), the
generated ConfigMaps and Secrets (``named``), the labelled namespaces
(``namespaces``), the platform key Secrets (``secrets_in``). An event is one
JSON decode and one ``store.apply``; what it changed goes to ``on_change``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from controller.cluster.runtime import clients, generated, records, resources

log = logging.getLogger(__name__)

C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)
L = TypeVar("L")  # what a listing holds: bodies, or what the store keeps of them
L_contra = TypeVar("L_contra", contravariant=True)

Watcher = Callable[[str], AsyncIterator[tuple[str, dict[str, Any]]]]

# A watch that ends sooner than this without an event is not resumed at once:
# a server that keeps closing it must not be asked again in a tight loop.
MIN_WATCH_SECONDS = 1.0


class Store(Protocol[L_contra, C_co]):
    """What ``follow`` keeps up to date: ``L`` is what a listing holds, ``C`` what a change
    reports (falsy: nothing)."""

    @property
    def ready(self) -> asyncio.Event:
        """Set once the first listing is in."""
        ...

    def replace(self, listed: Iterable[L_contra]) -> C_co:
        """Take a full listing."""
        ...

    def apply(self, event_type: str, body: Mapping[str, Any]) -> C_co:
        """Take one watch event (ADDED, MODIFIED, DELETED)."""
        ...


async def follow(
    what: str,
    lister: Callable[[], Awaitable[tuple[Iterable[L], str]]],
    watcher: Watcher,
    store: Store[L, C],
    on_change: Callable[[C], Awaitable[None]],
    on_error: Callable[[], None] = lambda: None,
    backoff: float = 2.0,
) -> None:
    """List, then watch from the list's version, resuming where the server ended a watch.

    On any failure (the version too old, the API server gone), list again
    after ``backoff``: the store's ``replace`` reports what changed meanwhile.
    Runs until cancelled.
    """
    while True:
        try:
            items, version = await lister()
            changed = store.replace(items)
            del items
            store.ready.set()
            if changed:
                await on_change(changed)
            while True:
                started, events = time.monotonic(), 0
                async for event_type, body in watcher(version):
                    events += 1
                    version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                    if event_type == "BOOKMARK":
                        continue
                    changed = store.apply(event_type, body)
                    if changed:
                        await on_change(changed)
                if not events and time.monotonic() - started < MIN_WATCH_SECONDS:
                    await asyncio.sleep(backoff)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the watch must outlive any API hiccup
            on_error()
            log.warning(
                "following %s failed (%s); listing again in %.0fs", what, type(e).__name__, backoff
            )
            await asyncio.sleep(backoff)


OnChange = Callable[[C], Awaitable[None]]


async def resources_of(
    client: clients.Client,
    store: resources.Resources,
    on_change: OnChange[list[resources.Change]],
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Every object of the custom kind ``store.kind``, in every namespace."""
    await follow(
        f"{store.kind} objects",
        lambda: client.list_every(store.kind, store.observe),
        lambda version: client.watch_every(store.kind, version),
        store,
        on_change,
        on_error,
    )


async def named(
    client: clients.Client,
    store: generated.Digests,
    name: str,
    on_change: OnChange[list[generated.Change]],
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Every ``store.kind`` called ``name``, in every namespace, kept as digests."""
    await follow(
        f"{store.kind}s named {name}",
        lambda: client.list_named(store.kind, name, records.digest),
        lambda version: client.watch_named(store.kind, name, version),
        store,
        on_change,
        on_error,
    )


async def namespaces(
    client: clients.Client,
    store: generated.Namespaces,
    on_change: OnChange[list[str]],
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """The namespaces carrying the plan label, kept as their (plan, account) labels."""
    await follow(
        "Namespaces labelled with a plan",
        lambda: client.list_labelled("Namespace", records.LABEL_PLAN, generated.namespace_labels),
        lambda version: client.watch_labelled("Namespace", records.LABEL_PLAN, version),
        store,
        on_change,
        on_error,
    )


class SecretSource(Protocol):
    async def secrets(
        self, namespace: str, name: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch_secrets(
        self, namespace: str, resource_version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


async def secrets_in(
    client: SecretSource,
    namespace: str,
    store: Store[Mapping[str, Any], C],
    on_change: OnChange[C],
    name: str | None = None,
    on_error: Callable[[], None] = lambda: None,
    backoff: float = 2.0,
) -> None:
    """The Secrets in ``namespace`` (``secrets.SecretStore``), or only the one called
    ``name``: a ``metadata.name`` field selector on the list and the watch, so another
    Secret changing there is never read, nor reported. Runs until cancelled."""
    what = f"Secret {namespace}/{name}" if name is not None else f"Secrets in {namespace}"
    await follow(
        what,
        lambda: client.secrets(namespace, name),
        lambda version: client.watch_secrets(namespace, version, name),
        store,
        on_change,
        on_error,
        backoff,
    )
