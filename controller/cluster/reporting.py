"""Statuses and Events: apply what changed, post a Warning once per new problem.

Both are remembered per object (kind, namespace, name) and forgotten when the
object is deleted: a tenant creating and deleting objects in a loop must not
grow the operator's memory (each new uid used to leave an entry behind).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from controller.cluster import conditions, metrics
from controller.cluster.runtime import clients, records

log = logging.getLogger(__name__)

Key = tuple[str, str | None, str]  # kind, namespace, name
# The reconciler's status fields (``statuses``: Ready, Reconciling, Stalled, CredentialsReady,
# observedGeneration, usingGlobal, appliedFields) are applied under this manager; the key
# checker's (``connections``) under its own.
FIELD_MANAGER = records.FIELD_MANAGER


def key_of(observed: records.Observed) -> Key:
    return (observed.kind, observed.namespace, observed.name)


class Reporter:
    def __init__(self, writer: clients.Writer, meter: metrics.Metrics) -> None:
        self.writer = writer
        self.metrics = meter
        # A hash of the resourceVersion a status was computed from and of the status
        # patched: a view that has not seen our last patch yet is no reason to
        # patch the same status again. (An int, not the pair: one per object.)
        self._patched: dict[Key, int] = {}
        self._warned: dict[Key, tuple[str, str]] = {}  # (reason, message) last posted

    @staticmethod
    def says_something_new(status: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
        """Whether ``status`` would be applied over ``current`` (the object's status as
        last seen) at all: ``status`` returns at once when not, so a caller may skip it."""
        return conditions.changed(current, status)

    async def status(
        self,
        observed: records.Observed,
        status: Mapping[str, Any],
        current: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply ``status`` if it says something new (``current``: ``observed.status``, when
        the caller decoded it already for computing ``status``; it is not changed)."""
        if current is None:
            current = observed.status
        if not self.says_something_new(status, current):
            return
        key = key_of(observed)
        digest = hashlib.blake2b(
            json.dumps(status, sort_keys=True, default=str).encode(), digest_size=16
        ).hexdigest()
        patched = hash((observed.resource_version, digest))
        if self._patched.get(key) == patched:
            return
        try:
            removed = _removed(current, status)
            if removed:
                await self.writer.remove_status(
                    observed.kind, observed.name, observed.namespace, removed
                )
            await self.writer.apply_status(
                observed.kind,
                observed.name,
                observed.namespace,
                {k: v for k, v in status.items() if v is not None},
                FIELD_MANAGER,
            )
        except clients.WriteError as e:
            self._patched.pop(key, None)
            self.metrics.errors.labels("status").inc()
            log.warning("status of %s %s: %s", observed.kind, observed.name, e)
            return
        self._patched[key] = patched
        ready = conditions.find(status, conditions.READY)
        if ready is None:
            return
        said = (str(ready["reason"]), str(ready["message"]))
        if ready["status"] == "False" and self._warned.get(key) != said:
            self._warned[key] = said
            await self.writer.post_event(observed.involved, "Warning", *said)
        elif ready["status"] == "True":
            self._warned.pop(key, None)

    def forget(self, kind: str, namespace: str | None, name: str) -> None:
        """The object is gone: nothing more to remember about it."""
        self._patched.pop((kind, namespace, name), None)
        self._warned.pop((kind, namespace, name), None)

    def __len__(self) -> int:
        """Objects remembered (for the tests that prove churn leaves nothing behind)."""
        return len(self._patched.keys() | self._warned.keys())


def _removed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[str] | None]:
    """What of ``status.connected`` goes (None: all of it; else the types gone). An apply
    removes only what its manager wrote: ``connected`` was the connection checker's before the
    reconciler wrote it, so what goes is removed whoever wrote it (a merge patch)."""
    if "connected" not in after or before.get("connected") is None:
        return {}
    now, then = after["connected"], before["connected"]
    if now is None:
        return {"connected": None}
    if isinstance(now, Mapping) and isinstance(then, Mapping) and set(then) - set(now):
        return {"connected": sorted(set(then) - set(now))}
    return {}
