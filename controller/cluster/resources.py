"""The custom resources as last seen: every GlobalSettings, Account and IntegrationSettings.

Each kind is followed with one paged list and one watch (``following``), and
every object is kept as a ``bodies.Observed``: its identity, the core's
declaration (or why it has none) and its status, nothing else of the body.
kopf used to hold them in its indexes: at 10,000 accounts it kept every
listed body, and a worker, a queue and four memories per object, until the
last of 14,000 was indexed, and its per-object processing was most of a
cold start (tests/bench/README.md). kopf still runs the operator: its event
loop, start-up and clean-up handlers, login and probes.

A store reports what a listing or an event changed as ``(before, after)``
pairs (None: absent); ``running`` hands them to the reconciler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from controller.cluster import bodies

Key = tuple[str | None, str]  # namespace (None: cluster-scoped), name
Change = tuple[bodies.Observed | None, bodies.Observed | None]  # before, after


class Named(Mapping[str, bodies.Observed]):
    """A cluster-scoped kind's objects by name (a read-only view of ``Resources``)."""

    def __init__(self, objects: dict[Key, bodies.Observed]) -> None:
        self._objects = objects

    def __getitem__(self, name: str) -> bodies.Observed:
        return self._objects[(None, name)]

    def __iter__(self) -> Iterator[str]:
        return (name for _, name in self._objects)

    def __len__(self) -> int:
        return len(self._objects)


class Resources:
    """Every object of one custom kind, by (namespace, name) and grouped by ``group``.

    ``group`` is the namespace an object concerns: an override's own, the one
    an Account claims (``Observed.claims``, valid or not), none for the global.
    """

    def __init__(
        self,
        kind: str,
        observe: Callable[[Mapping[str, Any]], bodies.Observed],
        group: Callable[[bodies.Observed], str | None] = lambda o: o.namespace,
    ) -> None:
        self.kind = kind
        self.observe = observe
        self._group = group
        self._objects: dict[Key, bodies.Observed] = {}
        self._grouped: dict[str, dict[str, bodies.Observed]] = {}
        self._ready = asyncio.Event()
        self.named = Named(self._objects)

    @property
    def ready(self) -> asyncio.Event:
        return self._ready

    @property
    def grouped(self) -> Mapping[str, Mapping[str, bodies.Observed]]:
        """namespace -> the objects concerning it, by name."""
        return self._grouped

    def get(self, name: str, namespace: str | None = None) -> bodies.Observed | None:
        return self._objects.get((namespace, name))

    def __len__(self) -> int:
        return len(self._objects)

    def replace(self, listed: Iterable[bodies.Observed]) -> list[Change]:
        """Take a full listing (each object reduced by ``observe`` as its page was read);
        every difference from what was held, the first listing's objects included."""
        fresh = {(o.namespace, o.name): o for o in listed}
        before = self._objects
        changes = [
            (before.get(key), fresh.get(key))
            for key in sorted(fresh.keys() | before.keys(), key=_order)
            if before.get(key) != fresh.get(key)
        ]
        self._objects.clear()
        self._grouped.clear()
        for observed in fresh.values():
            self._put(observed)
        return changes

    def apply(self, event_type: str, body: Mapping[str, Any]) -> list[Change]:
        meta = body.get("metadata") or {}
        before = self._objects.get((meta.get("namespace"), str(meta.get("name", ""))))
        if before is not None:
            self._drop(before)
        if event_type == "DELETED":
            return [(before, None)]
        after = (before and bodies.observe_again(before, body)) or self.observe(body)
        self._put(after)
        return [] if before == after else [(before, after)]

    def _put(self, observed: bodies.Observed) -> None:
        self._objects[(observed.namespace, observed.name)] = observed
        group = self._group(observed)
        if group is not None:
            self._grouped.setdefault(group, {})[observed.name] = observed

    def _drop(self, observed: bodies.Observed) -> None:
        self._objects.pop((observed.namespace, observed.name), None)
        group = self._group(observed)
        members = self._grouped.get(group) if group is not None else None
        if members is not None:
            members.pop(observed.name, None)
            if not members:
                del self._grouped[group]  # type: ignore[arg-type]


def _order(key: Key) -> tuple[str, str]:
    return (key[0] or "", key[1])
