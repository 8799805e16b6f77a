"""Raw Kubernetes bodies, and what the operator keeps of them in memory.

An ``Observed`` is one custom resource as last seen: its identity, its
declaration (or why it has none) and its current status. A ``Digest`` is a
generated ConfigMap or Secret reduced to a hash of its content: memory never
holds an account's key, only its digest.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, TypedDict

from controller.core import catalog, declarations, findings, rendering, validation

# On an account's namespace (read by the admission policy) and on its ConfigMap,
# so that a restarted operator knows the namespace is labelled without a write.
LABEL_PLAN = f"{catalog.GROUP}/plan"


class Meta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]


class Body(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: Meta
    spec: dict[str, Any]
    status: dict[str, Any]
    data: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Observed:
    """One custom resource as the operator last saw it."""

    kind: str
    name: str  # the object's name (image-generation, not image_generation)
    namespace: str | None
    uid: str
    generation: int
    declaration: declarations.Declaration | None
    problems: tuple[findings.Finding, ...]  # why there is no declaration
    status: Mapping[str, Any]
    resource_version: str = ""  # tells a stale index entry from one that saw our last patch

    @property
    def involved(self) -> dict[str, Any]:
        """An ``involvedObject`` reference for Events."""
        ref = {"apiVersion": catalog.API_VERSION, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        return {**ref, "uid": self.uid}


def observe(
    cat: catalog.Catalog,
    body: Mapping[str, Any],
    reserved: Collection[str] = declarations.RESERVED_NAMESPACES,
) -> Observed:
    """Parse a custom resource's body with the core, as file mode parses a document
    (``reserved``: the namespaces no Account may claim)."""
    raw: dict[str, Any] = dict(body)
    # An object nested too deeply (stored by a cluster without the admission
    # policy) is not copied (a deep copy recurses): the core refuses it by name.
    if validation.too_deep(raw) is None:
        raw = copy.deepcopy(raw)  # the declaration must not share the watch event's dicts
    declaration, problems = declarations.parse(cat, raw, reserved_namespaces=reserved)
    meta = raw.get("metadata") or {}
    name = str(meta.get("name", ""))
    return Observed(
        kind=str(raw.get("kind", "")),
        name=name,
        namespace=meta.get("namespace"),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        declaration=declaration,
        problems=tuple(problems),
        status=_status(raw.get("status")),
        resource_version=str(meta.get("resourceVersion", "")),
    )


def _status(status: Any) -> Mapping[str, Any]:
    if not isinstance(status, Mapping) or validation.too_deep(status) is not None:
        return {}  # ours is a few levels deep: anything else is rewritten
    return copy.deepcopy(dict(status))


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """A generated ConfigMap or Secret, reduced to what decides whether to rewrite it."""

    namespace: str
    content_hash: str  # of .data as stored (base64 for a Secret)
    owners: frozenset[str]  # ownerReferences' uids
    managed: bool  # carries our managed-by label
    plan: str = ""  # the plan label: the plan the namespace was labelled with when written


def digest(body: Mapping[str, Any]) -> Digest:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    digest = rendering.content_hash(dict(body.get("data") or {}))
    if body.get("binaryData") or body.get("stringData"):
        # Never what the operator writes: whatever the data says, rewrite it.
        digest = "foreign-shape:" + digest
    return Digest(
        namespace=str(meta.get("namespace", "")),
        content_hash=digest,
        owners=frozenset(str(o.get("uid")) for o in meta.get("ownerReferences") or ()),
        managed=labels.get(rendering.LABEL_MANAGED_BY) == rendering.MANAGED_BY,
        plan=str(labels.get(LABEL_PLAN, "")),
    )
