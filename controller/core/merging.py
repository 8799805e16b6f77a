"""The merge rules of the README (its "Merge rules"): ``account override > global default``, made exact.

1. A field's effective value is the account's active, allowed override, else the default.
2. ``using_global`` is true exactly when no override field is applied.
3. Only the integration's overridable fields apply; others are stripped and
   reported by name (credential-looking names as attempts to set a key).
4. A value outside its type, range or allowedValues rejects that field only.
5. Plans that may not override (and unknown plans) apply nothing; an unknown plan also
   gets no platform keys (``GlobalSettings.projects_keys``) and is always reported.
6. No IntegrationSettings object means defaults.
7. Defaults reach every account that does not override the field.
8. Same inputs, same result: everything here is ordered and pure.

Each ``<type>.json`` also says what the account may choose (``choices``): the
field schemas of schemas/integrations/, narrowed to the global's
``allowedValues``, or none when the plan may not override. A tenant cannot
read the global; a UI renders the seed's dropdown and slider from this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from controller.core import catalog, credentials, declarations, findings, rendering, screening

Reason = findings.Reason

BADGE_GLOBAL = "Using platform defaults"
BADGE_CUSTOM = "Custom settings"


@dataclasses.dataclass(frozen=True)
class EffectiveIntegration:
    type: str
    enabled: bool
    values: Mapping[str, Any]  # every field, in schema order
    overridden: tuple[str, ...]  # applied override fields, sorted
    choices: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # see ``choices``
    choices_json: str = ""  # ``choices`` as canonical JSON, shared by every account alike
    # ``json()`` once for every account that gets this integration alike (``_defaults_only``).
    rendered: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def using_global(self) -> bool:
        return not self.overridden

    @property
    def badge(self) -> str:
        """The seed's badge, as a table cell: "Using platform defaults" or "Custom settings"."""
        return BADGE_GLOBAL if self.using_global else BADGE_CUSTOM

    @property
    def summary(self) -> str:
        """One line for logs and statuses: ``platform defaults`` or ``custom <fields>``."""
        return "platform defaults" if self.using_global else f"custom {', '.join(self.overridden)}"

    def _seed_shape(self) -> dict[str, Any]:
        return {
            "id": self.type,
            "enabled": self.enabled,
            **self.values,
            "using_global": self.using_global,
            "overridden": list(self.overridden),
        }

    def document(self) -> dict[str, Any]:
        """The seed's response shape, plus ``choices``: what a workload reads from
        ``<type>.json``."""
        return {**self._seed_shape(), "choices": dict(self.choices)}

    def json(self) -> str:
        """``canonical_json(document())``, byte for byte, without encoding ``choices`` again.

        ``choices`` is most of the bytes and the same for every account of a
        plan; encoding it per account doubled the cost of a render. Sorted
        keys put it first whenever every other key sorts after it (true of
        every integration today); otherwise the whole document is encoded.
        """
        if self.rendered:
            return self.rendered
        rest = self._seed_shape()
        if self.choices_json and min(rest) > "choices":
            return '{"choices":' + self.choices_json + "," + rendering.canonical_json(rest)[1:]
        return rendering.canonical_json(self.document())


@dataclasses.dataclass(frozen=True)
class AccountResult:
    account: declarations.Account
    integrations: tuple[EffectiveIntegration, ...]
    findings: tuple[findings.Finding, ...]

    @property
    def data(self) -> dict[str, str]:
        """ConfigMap data: ``<type>.json`` -> canonical JSON."""
        return {f"{i.type}.json": i.json() for i in self.integrations}

    @property
    def content_hash(self) -> str:
        return rendering.content_hash(self.data)

    @property
    def using_global(self) -> dict[str, bool]:
        return {i.type: i.using_global for i in self.integrations}

    @property
    def summary(self) -> str:
        """``image_generation: platform defaults; openai: custom model, temperature``."""
        return "; ".join(f"{i.type}: {i.summary}" for i in self.integrations)

    @property
    def has_errors(self) -> bool:
        return any(f.is_error for f in self.findings)


def merge_account(
    cat: catalog.Catalog,
    global_: declarations.GlobalSettings,
    account: declarations.Account,
    overrides: Mapping[str, declarations.IntegrationSettings],
) -> AccountResult:
    """The effective settings of one account."""
    found: list[findings.Finding] = []
    allowed = global_.allows_overrides(account.plan)
    if allowed is None:
        # Said whether or not it has overrides: it gets no platform keys either.
        found.append(
            findings.note(
                Reason.UNKNOWN_PLAN,
                unknown_plan(account.plan, global_.plans),
                account.ref,
                ("spec", "plan"),
                account.source,
            )
        )
    elif overrides and allowed is False:
        found.append(
            findings.note(
                Reason.PLAN_FORBIDS,
                f"plan {credentials.printable_name(account.plan)!r} may not override defaults; the account uses the platform defaults",
                account.ref,
                ("spec", "plan"),
                account.source,
            )
        )

    results = []
    for type_name, itype in cat.integrations.items():
        defaults = global_.integrations.get(type_name)
        override = overrides.get(type_name)
        if defaults is None:
            if override is not None:
                found.append(
                    findings.note(
                        Reason.NOT_CONFIGURED,
                        f"integration {type_name!r} is not configured in GlobalIntegrationSettings; "
                        "these overrides have nothing to apply to",
                        override.ref,
                        ("metadata", "name"),
                        override.source,
                    )
                )
            continue
        applied: dict[str, Any] = {}
        if override is not None:
            accepted, field_findings = screen_overrides(cat, itype, defaults, override)
            found.extend(field_findings)
            if not override.is_active:
                found.append(
                    findings.note(
                        Reason.INACTIVE,
                        "isActive is false: the overrides are kept but not applied",
                        override.ref,
                        ("spec", "isActive"),
                        override.source,
                    )
                )
            elif allowed:
                applied = accepted
        if applied:
            results.append(_effective(type_name, itype, defaults, applied, bool(allowed)))
        else:
            results.append(_defaults_only(type_name, itype, defaults, bool(allowed)))
    return AccountResult(account=account, integrations=tuple(results), findings=tuple(found))


def _effective(
    type_name: str,
    itype: catalog.IntegrationType,
    defaults: declarations.IntegrationDefaults,
    applied: Mapping[str, Any],
    allowed: bool,
) -> EffectiveIntegration:
    values = {
        f: as_typed(itype.schema["properties"][f], applied.get(f, defaults.defaults[f]))
        for f in itype.fields
        if f in applied or f in defaults.defaults
    }
    return EffectiveIntegration(
        type=type_name,
        enabled=defaults.enabled,
        values=values,
        overridden=tuple(sorted(applied)),
        **_shared_choices(itype, defaults, allowed),
    )


V = TypeVar("V")
# A per-global memo: key -> (the objects whose ids the key holds, the value).
Memo = dict[tuple[Any, ...], tuple[tuple[object, ...], V]]


def _memoized(
    memo: Memo[V], key: tuple[Any, ...], owners: tuple[object, ...], build: Callable[[], V]
) -> V:
    """``build()`` once per ``key`` while ``owners`` (the objects whose ids ``key`` holds)
    are the same objects: they are kept with the value, so their ids are not reused
    while the entry lives, and compared on a hit. At most 256 entries (globals come
    and go: the memo is cleared when full)."""
    hit = memo.get(key)
    if hit is None or any(kept is not given for kept, given in zip(hit[0], owners, strict=True)):
        if len(memo) >= 256:
            memo.clear()
        hit = memo[key] = (owners, build())
    return hit[1]


# (type, id of the integration type, id of the global's defaults for it, allowed) ->
# the integration every account applying no override of it gets, rendered. Built and
# rendered once per global: in a fan-out most accounts override nothing, and
# building and encoding the same document for each was ~5 % of the operator's CPU
# (tests/bench --profile).
_DEFAULTS: Memo[EffectiveIntegration] = {}


def _defaults_only(
    type_name: str,
    itype: catalog.IntegrationType,
    defaults: declarations.IntegrationDefaults,
    allowed: bool,
) -> EffectiveIntegration:
    def build() -> EffectiveIntegration:
        effective = _effective(type_name, itype, defaults, {}, allowed)
        return dataclasses.replace(effective, rendered=effective.json())

    key = (type_name, id(itype), id(defaults), allowed)
    return _memoized(_DEFAULTS, key, (itype, defaults), build)


def unknown_plan(plan: str, declared: Collection[str]) -> str:
    """Why an account whose plan the global does not declare gets least privilege."""
    names = ", ".join(sorted(credentials.printable_name(p) for p in declared)) or "none"
    return (
        f"plan {credentials.printable_name(plan)!r} is not declared in "
        f"GlobalIntegrationSettings spec.plans (declared: {names}): the account gets the "
        "platform defaults, no overrides and no platform keys until the plan is declared or "
        "the Account names a declared one"
    )


def choices(
    itype: catalog.IntegrationType, defaults: declarations.IntegrationDefaults, allowed: bool
) -> dict[str, Any]:
    """What an account may set: ``{"overrides_allowed": bool, "fields": {field: schema}}``.

    Each field's schema is its JSON Schema from schemas/integrations/ (type,
    range, enum, pattern, description), with ``enum`` narrowed to the global's
    ``allowedValues`` where it lists some; ``fields`` is empty when the plan may
    not override. The same rules ``screen_overrides`` applies, so a value
    chosen from here is accepted.
    """
    if not allowed:
        return {"overrides_allowed": False, "fields": {}}
    fields: dict[str, Any] = {}
    for field in itype.fields:
        schema = dict(itype.schema["properties"][field])
        if field in defaults.allowed_values:
            schema["enum"] = [as_typed(schema, v) for v in defaults.allowed_values[field]]
        fields[field] = schema
    return {"overrides_allowed": True, "fields": fields}


def as_typed(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with every integral float where ``schema`` says integer made an int.

    JSON Schema calls ``100.0`` an integer, and YAML reads ``max_tokens: 100.0`` as a
    float; the API server stores it as ``100``. The outputs say ``"type":"integer"``, so
    both modes write ``100``."""
    kind = schema.get("type")
    if isinstance(value, float) and value.is_integer():
        integer = kind == "integer" or (isinstance(kind, list) and "integer" in kind)
        return int(value) if integer else value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: as_typed(properties.get(k, extra if isinstance(extra, dict) else {}), v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items")
        return [as_typed(items if isinstance(items, dict) else {}, v) for v in value]
    return value


# (id of the integration type, allowed, allowedValues) -> (choices, their JSON).
# Every account of a global shares a handful of these.
_CHOICES: Memo[tuple[dict[str, Any], str]] = {}


def _shared_choices(
    itype: catalog.IntegrationType, defaults: declarations.IntegrationDefaults, allowed: bool
) -> dict[str, Any]:
    def build() -> tuple[dict[str, Any], str]:
        value = choices(itype, defaults, allowed)
        return value, rendering.canonical_json(value)[:-1]

    key = (id(itype), allowed, tuple(sorted(defaults.allowed_values.items())) if allowed else ())
    value, text = _memoized(_CHOICES, key, (itype,), build)
    return {"choices": value, "choices_json": text}


def screen_overrides(
    cat: catalog.Catalog,
    itype: catalog.IntegrationType,
    defaults: declarations.IntegrationDefaults,
    override: declarations.IntegrationSettings,
) -> tuple[dict[str, Any], list[findings.Finding]]:
    """Split declared overrides into the fields that may apply and findings for the rest."""
    return screening.fields(
        cat, itype, override.overrides, defaults.allowed_values, override.ref, override.source
    )
