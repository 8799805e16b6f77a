"""The custom resources as last seen: every GlobalSettings, Account and IntegrationSettings.

Each kind is followed with one paged list and one watch (``following``), and
every object is kept as a ``records.Observed``: its identity, the core's
declaration (or why it has none) and its status, nothing else of the body
(kopf held far more: ``cluster.hosting`` says how much).

A store reports what a listing or an event changed as ``(before, after)``
pairs (None: absent); the operator's routes (``operating``) map them to keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

from controller.cluster.runtime import records

ObjectKey = tuple[str | None, str]  # namespace (None: cluster-scoped), name
T = TypeVar("T")
Change = tuple[records.Observed | None, records.Observed | None]  # before, after


class Named(Mapping[str, records.Observed]):
    """A cluster-scoped kind's objects by name (a read-only view of ``Resources``)."""

    def __init__(self, objects: dict[ObjectKey, records.Observed]) -> None:
        self._objects = objects

    def __getitem__(self, name: str) -> records.Observed:
        return self._objects[(None, name)]

    # ``get`` and ``in`` straight from the dict: Mapping's go through ``__getitem__``
    # and a KeyError for a missing name (several lookups per sync).
    @overload
    def get(self, name: str, /) -> records.Observed | None: ...
    @overload
    def get(self, name: str, /, default: records.Observed | T) -> records.Observed | T: ...
    def get(self, name: str, /, default: Any = None) -> Any:
        return self._objects.get((None, name), default)

    def __contains__(self, name: object) -> bool:
        return (None, name) in self._objects

    def __iter__(self) -> Iterator[str]:
        return (name for _, name in self._objects)

    def __len__(self) -> int:
        return len(self._objects)


class Grouped(Mapping[str, Mapping[str, records.Observed]]):
    """namespace -> the objects concerning it, by name (a read-only view of ``Resources``).

    Held as a tuple of names per namespace, not a dict: one namespace nearly
    always has one Account and a few overrides, and a dict per namespace was
    ~200 bytes per account at rest.
    """

    def __init__(
        self, objects: dict[ObjectKey, records.Observed], names: dict[str, tuple[ObjectKey, ...]]
    ):
        self._objects = objects
        self._names = names

    def __getitem__(self, namespace: str) -> Mapping[str, records.Observed]:
        return {key[1]: self._objects[key] for key in self._names[namespace]}

    # Straight from the dict: Mapping's ``get`` goes through ``__getitem__`` and a
    # KeyError for a namespace without objects (four lookups per sync).
    @overload
    def get(self, namespace: str, /) -> Mapping[str, records.Observed] | None: ...
    @overload
    def get(
        self, namespace: str, /, default: Mapping[str, records.Observed] | T
    ) -> Mapping[str, records.Observed] | T: ...
    def get(self, namespace: str, /, default: Any = None) -> Any:
        names = self._names.get(namespace)
        if names is None:
            return default
        return {key[1]: self._objects[key] for key in names}

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, namespace: object) -> bool:
        return namespace in self._names


class Resources:
    """Every object of one custom kind, by (namespace, name) and grouped by ``group``.

    ``group`` is the namespace an object concerns: an override's own, the one
    an Account claims (``Observed.claims``, valid or not), none for the global.
    """

    def __init__(
        self,
        kind: str,
        observe: Callable[[Mapping[str, Any]], records.Observed],
        group: Callable[[records.Observed], str | None] = lambda o: o.namespace,
    ) -> None:
        self.kind = kind
        self.observe = observe
        self._group = group
        self._objects: dict[ObjectKey, records.Observed] = {}
        self._groups: dict[str, tuple[ObjectKey, ...]] = {}
        self._ready = asyncio.Event()
        self.named = Named(self._objects)
        self.grouped = Grouped(self._objects, self._groups)

    @property
    def ready(self) -> asyncio.Event:
        return self._ready

    def get(self, name: str, namespace: str | None = None) -> records.Observed | None:
        return self._objects.get((namespace, name))

    def __len__(self) -> int:
        return len(self._objects)

    def replace(self, listed: Iterable[records.Observed]) -> list[Change]:
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
        self._groups.clear()
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
        after = (before and records.observe_again(before, body)) or self.observe(body)
        self._put(after)
        return [] if before == after else [(before, after)]

    def _put(self, observed: records.Observed) -> None:
        key = (observed.namespace, observed.name)
        self._objects[key] = observed
        group = self._group(observed)
        if group is not None:
            members = self._groups.get(group, ())
            if key not in members:
                self._groups[group] = tuple(sorted((*members, key), key=_order))

    def _drop(self, observed: records.Observed) -> None:
        key = (observed.namespace, observed.name)
        self._objects.pop(key, None)
        group = self._group(observed)
        if group is None or group not in self._groups:
            return
        members = tuple(k for k in self._groups[group] if k != key)
        if members:
            self._groups[group] = members
        else:
            del self._groups[group]


def _order(key: ObjectKey) -> tuple[str, str]:
    return (key[0] or "", key[1])
