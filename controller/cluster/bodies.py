"""Raw Kubernetes bodies, and what the operator keeps of them in memory.

An ``Observed`` is one custom resource as last seen: its identity, its
declaration (or why it has none) and its current status. A ``Digest`` is a
generated ConfigMap or Secret reduced to a hash of its content: memory never
holds an account's key, only its digest.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
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


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """One custom resource as the operator last saw it (one per object held at all
    times: slots, and nothing of the body the operator does not read)."""

    kind: str
    name: str  # the object's name (image-generation, not image_generation)
    namespace: str | None
    uid: str
    generation: int
    declaration: declarations.Declaration | None
    problems: tuple[findings.Finding, ...]  # why there is no declaration
    # The status as compact JSON, decoded on use (``status``): held for every
    # object at all times, as Python objects it was ~1.4 KiB per Account, as
    # text about half, for a decode of a few microseconds per sync.
    status_json: str = "{}"
    resource_version: str = ""  # tells a stale view from one that saw our last patch
    # An Account's spec.namespace as written, valid or not: the namespace whose
    # fate it touches (an invalid Account is reported with that namespace's).
    claims: str | None = None
    # The operator's own annotations (the global's test-connection request); no other.
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def status(self) -> dict[str, Any]:
        """The status as last seen (a fresh copy: change it freely)."""
        status: dict[str, Any] = json.loads(self.status_json)
        return status

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
    # The declaration must not share the event's dicts: its spec is copied (the
    # rest of what is kept is strings or re-encoded; managedFields, more than
    # half a body, need no copy). A spec nested too deeply (stored by a cluster
    # without the admission policy) is not copied (a deep copy recurses): the
    # core refuses it by name.
    spec = raw.get("spec")
    if isinstance(spec, dict) and validation.too_deep(spec) is None:
        raw["spec"] = copy.deepcopy(spec)
    declaration, problems = declarations.parse(cat, raw, reserved_namespaces=reserved)
    meta = raw.get("metadata") or {}
    claims = spec.get("namespace") if isinstance(spec, Mapping) else None
    namespace = meta.get("namespace")
    return Observed(
        kind=_shared(str(raw.get("kind", ""))),
        name=_shared(str(meta.get("name", ""))),
        namespace=_shared(namespace) if isinstance(namespace, str) else None,
        uid=_shared(str(meta.get("uid", ""))),
        generation=int(meta.get("generation") or 0),
        declaration=declaration,
        problems=tuple(problems),
        status_json=_status(raw.get("status")),
        resource_version=str(meta.get("resourceVersion", "")),
        claims=_shared(claims) if isinstance(claims, str) and claims else None,
        annotations=_ours(meta.get("annotations")),
    )


def observe_again(before: Observed, body: Mapping[str, Any]) -> Observed | None:
    """``body``, a newer view of ``before``'s object, without the core's parse when its
    spec cannot have changed (same uid and generation: the API server bumps the
    generation on every spec change); None when it may have.

    Most events of a custom resource are the echo of the operator's own status
    patch: parsing each again was the bulk of a cold start's watch handling.
    """
    meta = body.get("metadata") or {}
    if (
        not before.generation
        or str(meta.get("uid", "")) != before.uid
        or int(meta.get("generation") or 0) != before.generation
    ):
        return None
    return dataclasses.replace(
        before,
        status_json=_status(body.get("status")),
        resource_version=str(meta.get("resourceVersion", "")),
        annotations=_ours(meta.get("annotations")),
    )


def _ours(annotations: Any) -> Mapping[str, str]:
    if not isinstance(annotations, Mapping):
        return {}
    return {k: str(v) for k, v in annotations.items() if k.startswith(catalog.GROUP + "/")}


def same_but_status(before: Observed | None, after: Observed | None) -> bool:
    """Whether two views of an object differ only in what the operator writes itself
    (its status, and the resourceVersion that patch gave it): nothing to reconcile."""
    if before is None or after is None:
        return before is after
    return dataclasses.replace(before, status_json="", resource_version="") == dataclasses.replace(
        after, status_json="", resource_version=""
    )


def _status(status: Any) -> str:
    if not isinstance(status, Mapping) or validation.too_deep(status) is not None:
        return "{}"  # ours is a few levels deep: anything else is rewritten
    return json.dumps(status, separators=(",", ":"))


def _shared(text: str) -> str:
    """One string object per distinct name, uid or namespace, however many records and
    watch events hold it (each decoded event brings its own copy)."""
    return sys.intern(text)


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """A generated ConfigMap or Secret, reduced to what decides whether to rewrite it."""

    namespace: str
    content_hash: str  # of .data as stored (base64 for a Secret)
    owners: tuple[str, ...]  # ownerReferences' uids (one, nearly always: a tuple is small)
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
        namespace=_shared(str(meta.get("namespace", ""))),
        content_hash=digest,
        owners=tuple(sorted(_shared(str(o.get("uid"))) for o in meta.get("ownerReferences") or ())),
        managed=labels.get(rendering.LABEL_MANAGED_BY) == rendering.MANAGED_BY,
        plan=_shared(str(labels.get(LABEL_PLAN, ""))),
    )
