"""Statuses and Events: patch what changed, post a Warning once per new problem.

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

from controller.cluster import bodies, clients, conditions, metrics

log = logging.getLogger(__name__)

Key = tuple[str, str | None, str]  # kind, namespace, name


def key_of(observed: bodies.Observed) -> Key:
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

    async def status(self, observed: bodies.Observed, status: Mapping[str, Any]) -> None:
        if not conditions.changed(observed.status, status):
            return
        key = key_of(observed)
        digest = hashlib.blake2b(
            json.dumps(status, sort_keys=True, default=str).encode(), digest_size=16
        ).hexdigest()
        patched = hash((observed.resource_version, digest))
        if self._patched.get(key) == patched:
            return
        try:
            await self.writer.patch_status(observed.kind, observed.name, observed.namespace, status)
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
