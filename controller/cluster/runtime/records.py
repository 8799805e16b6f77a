"""The records the caches keep of the objects the operator follows, and the labels it writes.

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
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from controller.core import catalog, declarations, findings, rendering, validation
from controller.core.rendering import LABEL_PLAN as LABEL_PLAN

# The field manager of every write the operator makes (clients.py).
FIELD_MANAGER = "settings-controller"


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
    applied: bool = False  # our field manager holds fields of it (managedFields)
    account_owned: bool = False  # an ownerReference names an Account
    keys: tuple[str, ...] = ()  # the names in .data, sorted (never a value)
    binary_keys: tuple[str, ...] = ()  # the names in .binaryData: never the operator's

    @property
    def generated(self) -> bool:
        """Whether the operator wrote it for an account: an ownerReference to an Account
        (a uid the garbage collector checks: nobody sets one by accident, and a forged one
        gets the object deleted with that Account anyway) and our label or our field
        manager (a hand edit removing one leaves the other; the label is then put back).
        A label alone, which anyone can set, proves nothing."""
        return self.account_owned and (self.managed or self.applied)

    def foreign_keys(self, data: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The names in .data and .binaryData that a render to ``data`` does not hold."""
        return tuple(k for k in self.keys if k not in data), self.binary_keys


def digest(body: Mapping[str, Any]) -> Digest:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    data = dict(body.get("data") or {})
    binary = body.get("binaryData") or {}
    digest = rendering.content_hash(data)
    if binary or body.get("stringData"):
        # Never what the operator writes: whatever the data says, rewrite it.
        digest = "foreign-shape:" + digest
    managers = meta.get("managedFields") or ()
    references = meta.get("ownerReferences") or ()
    return Digest(
        namespace=_shared(str(meta.get("namespace", ""))),
        content_hash=digest,
        owners=tuple(sorted(_shared(str(o.get("uid"))) for o in references)),
        managed=labels.get(rendering.LABEL_MANAGED_BY) == rendering.MANAGED_BY,
        plan=_shared(str(labels.get(LABEL_PLAN, ""))),
        applied=any(isinstance(m, Mapping) and m.get("manager") == FIELD_MANAGER for m in managers),
        account_owned=any(
            o.get("kind") == catalog.ACCOUNT and o.get("apiVersion") == catalog.API_VERSION
            for o in references
        ),
        keys=_shared_names(data),
        binary_keys=_shared_names(binary) if isinstance(binary, Mapping) else (),
    )


# Every account's ConfigMap holds the same few names: one tuple for each set of
# them, however many objects hold it (a tuple per object was ~100 bytes each).
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_names(mapping: Mapping[str, Any]) -> tuple[str, ...]:
    names = tuple(sorted(str(k) for k in mapping))
    if len(_NAMES) >= 1024:  # hand-added names come and go: keep it small
        _NAMES.clear()
    return _NAMES.setdefault(names, names)


class World:
    """Followed Accounts and overrides as the core's ``decisions.World``: ``tenants`` maps a
    namespace to the Account objects naming it, ``overrides`` a namespace to its
    IntegrationSettings objects, each by name (the operator's views and the gateway's
    stores alike)."""

    def __init__(
        self,
        tenants: Mapping[str, Mapping[str, Observed]],
        overrides: Mapping[str, Mapping[str, Observed]],
    ) -> None:
        self.tenants, self.overrides = tenants, overrides

    def observed_accounts(self, namespace: str) -> list[Observed]:
        """Every Account object naming ``namespace`` (valid or not), by name."""
        claiming = self.tenants.get(namespace) or {}
        return [claiming[name] for name in sorted(claiming)]

    def claimants(self, namespace: str) -> Sequence[declarations.Account]:
        return [
            o.declaration
            for o in self.observed_accounts(namespace)
            if isinstance(o.declaration, declarations.Account)
            and o.declaration.namespace == namespace
        ]

    def namesakes(self, name: str) -> int:
        return 1  # the API server keeps names unique

    def overrides_in(
        self, namespace: str
    ) -> Mapping[str, Sequence[declarations.IntegrationSettings]]:
        return {
            o.declaration.type: [o.declaration]
            for o in (self.overrides.get(namespace) or {}).values()
            if isinstance(o.declaration, declarations.IntegrationSettings)
        }
