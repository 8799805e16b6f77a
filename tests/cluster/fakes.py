"""The one fake ``clients.Writer`` of the tests that run the operator's parts without a cluster.

``RecordingWriter`` sends nothing: it keeps what the operator would send to the API
server, to be asserted on or searched (``dump``). Given the reconciler's ``Views``, it
also writes its applies, deletions and removals back into them, as the watches would.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from controller.cluster import reconciling
from controller.cluster.runtime import generated, records


class Event(NamedTuple):
    involved: dict[str, Any]
    type: str
    reason: str
    message: str


class RecordingWriter:
    """What the operator would send to the API server, in lists by request.

    ``delay``: each apply takes that long; ``peak`` is the most applies in flight at once.
    """

    def __init__(self, views: reconciling.Views | None = None, delay: float = 0.0) -> None:
        self.applied: list[dict[str, Any]] = []
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[Event] = []
        self.deleted: list[tuple[str, str | None, str]] = []
        self.unlabelled: list[tuple[str, str, tuple[str, ...]]] = []
        self.removed_keys: list[tuple[str, str, tuple[str, ...]]] = []
        self.delay = delay
        self.running = 0
        self.peak = 0
        self.views = views

    def dump(self) -> str:
        """Everything recorded as one text, to search for what must not be sent."""
        recorded = [
            self.applied,
            self.statuses,
            self.events,
            self.deleted,
            self.unlabelled,
            self.removed_keys,
        ]
        return json.dumps(recorded, default=str)

    async def apply(self, manifest: Mapping[str, Any]) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        self.applied.append(copy.deepcopy(dict(manifest)))
        if self.views is not None and manifest["kind"] in ("ConfigMap", "Secret"):
            # What the watch would bring back into generated.Digests.
            index = self.views.configmaps if manifest["kind"] == "ConfigMap" else self.views.secrets
            index[manifest["metadata"]["namespace"]] = records.digest(manifest)  # type: ignore[index]
        if self.views is not None and manifest["kind"] == "Namespace":
            name, labels = generated.namespace_labels(manifest)
            self.views.namespaces[name] = labels  # type: ignore[index]

    async def apply_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        status: Mapping[str, Any],
        field_manager: str,
    ) -> None:
        self.statuses.append((kind, name, copy.deepcopy(dict(status))))

    async def remove_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        fields: Mapping[str, Collection[str] | None],
    ) -> None:
        self.statuses.append((kind, name, {"removed": copy.deepcopy(dict(fields))}))

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append(Event(copy.deepcopy(dict(involved)), type_, reason, message))

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self.deleted.append((kind, namespace, name))
        if self.views is not None and namespace is not None:
            index = self.views.configmaps if kind == "ConfigMap" else self.views.secrets
            index.pop(namespace, None)  # type: ignore[attr-defined]

    async def remove_labels(self, kind: str, name: str, labels: Collection[str]) -> None:
        self.unlabelled.append((kind, name, tuple(labels)))
        if self.views is not None:
            self.views.namespaces.pop(name, None)  # type: ignore[attr-defined]

    async def remove_keys(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Collection[str],
        binary_data: Collection[str] = (),
    ) -> None:
        self.removed_keys.append((kind, namespace, (*data, *binary_data)))
        if self.views is not None:
            index = self.views.configmaps if kind == "ConfigMap" else self.views.secrets
            seen = index.get(namespace)
            if seen is not None:
                kept = tuple(k for k in seen.keys if k not in data)
                index[namespace] = dataclasses.replace(seen, keys=kept, binary_keys=())  # type: ignore[index]
