"""Typed declarations, parsed from object bodies that already passed their schema.

Bodies come from YAML files (file mode) or the API server (cluster mode); both
validate them against the catalog first, then call these parsers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Hashable, Mapping
from typing import Any

from controller.core import catalog, credentials, findings, screening, validation


@dataclasses.dataclass(frozen=True, slots=True)
class SecretKeyRef:
    secret_name: str
    key: str
    endpoint: str | None = None  # the provider API's base URL; None: the provider's public one


@dataclasses.dataclass(frozen=True, slots=True)
class IntegrationDefaults:
    type: str
    enabled: bool
    credentials: Mapping[str, SecretKeyRef]
    defaults: Mapping[str, Any]
    allowed_values: Mapping[str, tuple[Any, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalSettings:
    name: str
    plans: Mapping[str, bool]  # plan -> allowOverrides
    integrations: Mapping[str, IntegrationDefaults]  # in catalog order
    source: Hashable = dataclasses.field(default=None, compare=False)
    keyless_plans: frozenset[str] = frozenset()  # plans with projectKeys: false

    def projects_keys(self, plan: str) -> bool:
        """Whether this plan's accounts get the platform keys in their namespace: a plan
        the global does not declare gets none (least privilege: a plan renamed in the
        global before its Accounts must not hand them every key)."""
        return plan in self.plans and plan not in self.keyless_plans

    def allows_overrides(self, plan: str) -> bool | None:
        """True/False for a known plan, None for an unknown one (which may not override)."""
        return self.plans.get(plan)


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    name: str
    plan: str
    namespace: str
    source: Hashable = dataclasses.field(default=None, compare=False)

    @property
    def ref(self) -> findings.ObjectRef:
        return findings.ObjectRef(catalog.ACCOUNT, self.name)


@dataclasses.dataclass(frozen=True, slots=True)
class IntegrationSettings:
    """One account's overrides of one integration, as declared (nothing stripped yet)."""

    namespace: str
    type: str  # = metadata.name
    is_active: bool
    overrides: Mapping[str, Any]
    source: Hashable = dataclasses.field(default=None, compare=False)

    @property
    def ref(self) -> findings.ObjectRef:
        return findings.ObjectRef(catalog.OVERRIDE, self.type, self.namespace)


Declaration = GlobalSettings | Account | IntegrationSettings


def ref_of(body: Mapping[str, Any]) -> findings.ObjectRef:
    """A best-effort reference to a body that may not have passed its schema."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    kind = body.get("kind")
    return findings.ObjectRef(
        kind=credentials.printable_name(kind) if isinstance(kind, str) else "(no kind)",
        name=credentials.printable_name(name) if isinstance(name, str) else "(no name)",
        namespace=credentials.printable_name(namespace) if isinstance(namespace, str) else None,
    )


# Namespaces no Account may claim: the operator would copy the platform keys
# there and label them. The operator's own namespace is the deploy/ default;
# an operator run elsewhere passes its list (``reserved_namespace``).
RESERVED_NAMESPACES = (
    "default",
    "kube-node-lease",
    "kube-public",
    "kube-system",
    "settings-controller-system",
)


def parse(
    cat: catalog.Catalog,
    body: Mapping[str, Any],
    source: Hashable = None,
    reserved_namespaces: Collection[str] = RESERVED_NAMESPACES,
) -> tuple[Declaration | None, list[findings.Finding]]:
    """Validate ``body`` against its kind's schema and build the declaration.

    Returns ``(None, errors)`` when the body is not a valid object of a known kind.
    """
    ref = ref_of(body)
    kind = cat.kinds.get(str(body.get("kind")))
    if kind is None:
        return None, [
            findings.error(
                findings.Reason.UNKNOWN_KIND,
                f"kind: unknown kind {ref.kind!r} (expected one of {', '.join(catalog.KINDS)})",
                ref,
                ("kind",),
                source,
            )
        ]
    deep = validation.too_deep(body)
    if deep is not None:
        return None, [
            findings.error(
                findings.Reason.SCHEMA_VIOLATION,
                f"{validation.dotted(deep)}: nested more than {validation.MAX_DEPTH} levels deep",
                ref,
                deep,
                source,
            )
        ]
    problems = validation.problems(kind.validator, body, kind.fast_validator)
    errors = [
        findings.error(findings.Reason.SCHEMA_VIOLATION, _with_hint(cat, p), ref, p.path, source)
        for p in problems
    ]
    # The checks beyond the schema run on a body that failed it too, wherever the
    # part they read is well-formed: one run shows every problem of a file.
    errors.extend(_semantic(cat, body, ref, source))
    errors.extend(reserved_namespace(body, reserved_namespaces, ref, source))
    if errors:
        errors.extend(_fields_of_invalid(cat, body, ref, source, errors))
        return None, errors
    return _build(cat, kind.name, body, source), []


def _fields_of_invalid(
    cat: catalog.Catalog,
    body: Mapping[str, Any],
    ref: findings.ObjectRef,
    source: Hashable,
    errors: list[findings.Finding],
) -> list[findings.Finding]:
    """The override fields of an IntegrationSettings that failed its schema, screened as the
    merge would (without the global's allowedValues, which a parse does not know); fields
    the schema already reported are not reported twice."""
    if body.get("kind") != catalog.OVERRIDE:
        return []
    meta, spec = body.get("metadata"), body.get("spec")
    name = meta.get("name") if isinstance(meta, dict) else None
    overrides = spec.get("overrides") if isinstance(spec, dict) else None
    type_name = cat.type_for_object_name(name) if isinstance(name, str) else None
    if type_name is None or not isinstance(overrides, dict):
        return []
    if not all(isinstance(field, str) for field in overrides):
        return []
    reported = {e.path[:3] for e in errors}
    _, found = screening.fields(cat, cat.integrations[type_name], overrides, None, ref, source)
    return [f for f in found if f.path[:3] not in reported and f.path[:2] not in reported]


def _with_hint(cat: catalog.Catalog, problem: validation.Problem) -> str:
    name = problem.path[-1] if problem.path else None
    if (
        isinstance(name, str)
        and problem.message.endswith("unknown field")
        and cat.looks_like_credential(name)
    ):
        return (
            f"{problem.message}: it looks like a platform key; keys are referenced from "
            "GlobalIntegrationSettings credentials (a Secret), never written in a declaration"
        )
    return problem.message


def _semantic(
    cat: catalog.Catalog, body: Mapping[str, Any], ref: findings.ObjectRef, source: Hashable
) -> list[findings.Finding]:
    """Checks that the schema cannot express: defaults within their own allowedValues,
    and no key-shaped value anywhere in the global (it would reach every account)."""
    if body.get("kind") != catalog.GLOBAL:
        return []
    out = []
    # Read defensively: the body may have failed its schema.
    spec = body.get("spec")
    integrations = spec.get("integrations") if isinstance(spec, dict) else None
    for name, block in _items(integrations):
        if not isinstance(block, dict):
            continue
        out.extend(keys_in_global_block(str(name), block, ref, source))
        defaults = block.get("defaults")
        for field, allowed in _items(block.get("allowedValues")):
            default = defaults.get(field) if isinstance(defaults, dict) else None
            if isinstance(allowed, list) and default is not None and default not in allowed:
                path = ("spec", "integrations", name, "defaults", field)
                out.append(
                    findings.error(
                        findings.Reason.DEFAULT_NOT_ALLOWED,
                        f"{validation.dotted(path)}: the default is not one of allowedValues.{field}",
                        ref,
                        path,
                        source,
                    )
                )
    return out


def keys_in_global_block(
    name: str, block: Mapping[str, Any], ref: findings.ObjectRef, source: Hashable
) -> list[findings.Finding]:
    """A key pasted into defaults or allowedValues would be copied into every account's
    ConfigMap; one pasted as a Secret reference would be echoed in the global's status."""
    out = []
    base = ("spec", "integrations", name)
    for section in ("defaults", "allowedValues"):
        for field, value in _items(block.get(section)):
            names = credentials.nested_names(value)
            values = credentials.nested_values(value)
            if any(map(credentials.looks_like_key_value, (*names, *values))):
                path: validation.Path = (*base, section, field)
                out.append(
                    findings.error(
                        findings.Reason.KEY_SHAPED_VALUE,
                        f"{validation.dotted(path)}: {KEY_VALUE_HINT}",
                        ref,
                        path,
                        source,
                    )
                )
    for slot, secret_ref in _items(block.get("credentials")):
        if not isinstance(secret_ref, dict):
            continue
        problem = credentials.endpoint_problem(secret_ref.get("endpoint"))
        if problem is not None:
            path = (*base, "credentials", slot, "endpoint")
            out.append(
                findings.error(
                    findings.Reason.KEY_SHAPED_VALUE,
                    f"{validation.dotted(path)}: {problem}",
                    ref,
                    path,
                    source,
                )
            )
        for part in ("secretName", "key"):
            if credentials.looks_like_key_value(secret_ref.get(part)):
                path = (*base, "credentials", slot, part)
                out.append(
                    findings.error(
                        findings.Reason.KEY_SHAPED_VALUE,
                        f"{validation.dotted(path)}: looks like an API key, not the name of "
                        "a Secret or of a key in it; put the key in the Secret and name it here",
                        ref,
                        path,
                        source,
                    )
                )
    return out


KEY_VALUE_HINT = (
    "the value looks like an API key and is refused; platform keys are referenced from "
    "credentials (a Secret), never written in settings"
)


def reserved_namespace(
    body: Mapping[str, Any],
    reserved: Collection[str],
    ref: findings.ObjectRef,
    source: Hashable = None,
) -> list[findings.Finding]:
    """An Account may not claim a system namespace or the operator's own: its keys would be
    copied there and the namespace relabelled."""
    if body.get("kind") != catalog.ACCOUNT:
        return []
    spec = body.get("spec")
    namespace = spec.get("namespace") if isinstance(spec, dict) else None
    if not isinstance(namespace, str) or namespace not in reserved:
        return []
    path = ("spec", "namespace")
    return [
        findings.error(
            findings.Reason.RESERVED_NAMESPACE,
            f"spec.namespace: {namespace} is reserved and cannot be an account's namespace "
            f"(reserved: {', '.join(sorted(reserved))})",
            ref,
            path,
            source,
        )
    ]


def _items(value: Any) -> list[tuple[Any, Any]]:
    """The entries of a mapping the schema may not have vouched for; none for anything else."""
    return list(value.items()) if isinstance(value, dict) else []


def _build(
    cat: catalog.Catalog, kind: str, body: Mapping[str, Any], source: Hashable
) -> Declaration:
    meta, spec = body["metadata"], body["spec"]
    if kind == catalog.ACCOUNT:
        return Account(meta["name"], spec["plan"], spec["namespace"], source)
    if kind == catalog.OVERRIDE:
        return IntegrationSettings(
            namespace=meta["namespace"],
            type=cat.type_for_object_name(meta["name"]) or meta["name"],
            is_active=spec.get("isActive", True),
            overrides=dict(spec.get("overrides") or {}),
            source=source,
        )
    integrations = {
        name: IntegrationDefaults(
            type=name,
            enabled=block.get("enabled", True),
            credentials={
                slot: SecretKeyRef(ref["secretName"], ref["key"], ref.get("endpoint"))
                for slot, ref in sorted(block.get("credentials", {}).items())
            },
            defaults=dict(block["defaults"]),
            allowed_values={f: tuple(v) for f, v in block.get("allowedValues", {}).items()},
        )
        for name, block in body["spec"]["integrations"].items()
    }
    plans = {name: plan["allowOverrides"] for name, plan in spec.get("plans", {}).items()}
    keyless = frozenset(
        name for name, plan in spec.get("plans", {}).items() if not plan.get("projectKeys", True)
    )
    return GlobalSettings(meta["name"], plans, integrations, source, keyless)
