"""The generated ConfigMaps and credential Secrets as last seen, by namespace.

Each kind is followed with one list and one watch across all namespaces,
limited server-side to the generated object's name (``following``). What is
kept of an object is its ``records.Digest``: a content hash, its owners, two
labels. The reconciler compares a render with it to skip unchanged writes, and
``Reconciler.generated_changed`` tells the echo of its own write from a drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

from controller.cluster.runtime import records
from controller.core import rendering

# What a change reports: (namespace, the object as now seen, None when deleted).
Change = tuple[str, records.Digest | None]
T = TypeVar("T")
V = TypeVar("V")


class _ByNamespace(Mapping[str, V]):
    """A read-only mapping by namespace over a dict its owner replaces or edits, ready once
    listed."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, V] = {}
        self._ready = asyncio.Event()

    @property
    def ready(self) -> asyncio.Event:
        return self._ready

    def __getitem__(self, namespace: str) -> V:
        return self._by_namespace[namespace]

    # ``get`` and ``in`` straight from the dict (Mapping's go through ``__getitem__``
    # and a KeyError): looked up on every sync.
    @overload
    def get(self, namespace: str, /) -> V | None: ...
    @overload
    def get(self, namespace: str, /, default: V | T) -> V | T: ...
    def get(self, namespace: str, /, default: Any = None) -> Any:
        return self._by_namespace.get(namespace, default)

    def __contains__(self, namespace: object) -> bool:
        return namespace in self._by_namespace

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_namespace)

    def __len__(self) -> int:
        return len(self._by_namespace)


class Digests(_ByNamespace[records.Digest]):
    """namespace -> the generated object of one kind there (a read-only mapping)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def replace(self, listed: Iterable[records.Digest]) -> list[Change]:
        """Take a full listing (reduced by ``records.digest`` as it was read); what changed
        since the last one (nothing, the first time)."""
        fresh = {o.namespace: o for o in listed}
        before, self._by_namespace = self._by_namespace, fresh
        if not self._ready.is_set():
            return []  # at start every Account is reconciled anyway
        return [
            (ns, fresh.get(ns))
            for ns in sorted(fresh.keys() | before.keys())
            if fresh.get(ns) != before.get(ns)
        ]

    def apply(self, event_type: str, body: Mapping[str, Any]) -> list[Change]:
        seen = records.digest(body)
        before = self._by_namespace.get(seen.namespace)
        if event_type == "DELETED":
            self._by_namespace.pop(seen.namespace, None)
            return [(seen.namespace, None)]
        self._by_namespace[seen.namespace] = seen
        # Only what decides a rewrite counts: an annotation added by hand does not.
        return [] if seen == before else [(seen.namespace, seen)]


class Namespaces(_ByNamespace[tuple[str, str]]):
    """namespace -> (plan, account) labels, for every namespace carrying our plan label.

    Followed with a label selector, so a namespace whose label someone removes
    leaves the selection (a DELETED event) and its account is reconciled again.
    """

    kind = "Namespace"

    def replace(self, listed: Iterable[tuple[str, tuple[str, str]]]) -> list[str]:
        fresh = dict(listed)
        before, self._by_namespace = self._by_namespace, fresh
        if not self._ready.is_set():
            return []
        return sorted(ns for ns in fresh.keys() | before.keys() if fresh.get(ns) != before.get(ns))

    def apply(self, event_type: str, body: Mapping[str, Any]) -> list[str]:
        namespace, labels = namespace_labels(body)
        before = self._by_namespace.get(namespace)
        if event_type == "DELETED":
            self._by_namespace.pop(namespace, None)
        else:
            self._by_namespace[namespace] = labels
        return [] if self._by_namespace.get(namespace) == before else [namespace]


def namespace_labels(body: Mapping[str, Any]) -> tuple[str, tuple[str, str]]:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return str(meta.get("name", "")), (
        str(labels.get(records.LABEL_PLAN, "")),
        str(labels.get(rendering.LABEL_ACCOUNT, "")),
    )
