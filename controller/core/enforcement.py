"""What the gateway lets a request do: the account's effective settings, enforced.

Pure: given one account's effective settings (``merging.merge_account``, after
``decisions.decide`` chose the account, the same core as the ConfigMap) and a
request body, either the body to send upstream or a refusal that says why.

- A field the request leaves out gets the account's effective value.
- A field it sets must be one the account could have chosen: the effective
  value, or, for a plan that may override, a value the integration's schema and
  the global's ``allowedValues`` admit (``EffectiveIntegration.choices``, the same
  narrowing ``screen_overrides`` applies to a declared override). Free plans and
  ``isActive: false`` get the defaults only: the merge already made them the
  effective values, and ``choices`` then admits nothing else.
- ``max_tokens`` (and ``max_completion_tokens``, its newer name) is a ceiling:
  any positive integer up to the effective value is admitted for every plan (a
  smaller cap uses less than the account may); above it is refused, never cut.
- A value of the wrong type or outside the schema is ``invalid_value`` (400); a
  valid value the account may not choose is ``not_allowed`` (403). Messages name
  the field and what is allowed, never the value sent (it may be anything).
- ``n`` (choices per request) is 1: n completions or images cost n times what the
  account's settings bound one request to (``max_tokens`` is per choice), so a
  larger ``n`` would step around the ceiling; it is refused (403), never cut.
  ``stream`` is a boolean: the gateway and the provider must agree on what the
  answer is.
- ``service: runware`` on image generation is refused with 501: Runware has no
  OpenAI-shaped images route, and translating one into its task API is not built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core import catalog, credentials, decisions, merging

CHAT = "openai"
IMAGES = "image_generation"

# request field -> effective settings field, per integration
CHAT_FIELDS: Mapping[str, str] = {
    "model": "model",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
}
CEILINGS: Mapping[str, str] = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens"}
IMAGE_FIELDS: Mapping[str, str] = {
    "model": "model",
    "quality": "image_quality",
    "style": "image_style",
}
# request fields that multiply what one request costs: at most 1 (absent means 1)
MULTIPLIERS = ("n",)
PREFERRED_SIZE = "featured"  # the size a request without one gets, when the account names it

NOT_ALLOWED = "not_allowed"
INVALID_VALUE = "invalid_value"
NO_ACCOUNT = "no_account"
NOT_IMPLEMENTED = "not_implemented"
NO_SETTINGS = "settings_unavailable"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a request is not sent: an HTTP status, an OpenAI-style code and type, the field."""

    status: int
    code: str
    message: str
    param: str | None = None

    @property
    def type(self) -> str:
        if self.status in (401, 403):
            return "permission_error" if self.status == 403 else "authentication_error"
        if self.status >= 500:
            return "server_error"
        return "invalid_request_error"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclasses.dataclass(frozen=True)
class Admitted:
    """The request to send: its body with every left-out field filled, and the key slot."""

    body: Mapping[str, Any]
    integration: str
    slot: str
    filled: tuple[str, ...]  # request fields the gateway added, for logs and tests


def account_of(decision: decisions.Decision) -> Refusal | None:
    """None when exactly one account renders in the namespace; else why the gateway refuses."""
    if decision.verdict is decisions.Verdict.RENDER and decision.account is not None:
        return None
    if decision.cause is not None and decision.cause.reason is decisions.Reason.NO_GLOBAL:
        return Refusal(503, NO_SETTINGS, decision.cause.message)
    if decision.cause is not None and decision.claimants:
        return Refusal(403, NO_ACCOUNT, decision.cause.message)
    return Refusal(
        403,
        NO_ACCOUNT,
        f"no Account claims namespace {credentials.printable_name(decision.namespace)!r}",
    )


def _find(result: merging.AccountResult, integration: str) -> merging.EffectiveIntegration | None:
    return next((i for i in result.integrations if i.type == integration), None)


def _usable(
    result: merging.AccountResult, integration: str
) -> merging.EffectiveIntegration | Refusal:
    effective = _find(result, integration)
    if effective is None:
        return Refusal(
            403, NOT_ALLOWED, f"integration {integration!r} is not configured by the platform"
        )
    if not effective.enabled:
        return Refusal(403, NOT_ALLOWED, f"integration {integration!r} is disabled by the platform")
    return effective


def _shown(values: Sequence[Any]) -> str:
    return ", ".join(credentials.printable_name(str(v)) for v in values)


def check_field(
    itype: catalog.IntegrationType,
    effective: merging.EffectiveIntegration,
    param: str,
    field: str,
    value: Any,
) -> Refusal | None:
    """Whether ``value`` for ``field`` (sent as ``param``) is one the account could have chosen."""
    current = effective.values.get(field)
    if type(value) is type(current) and value == current:
        return None  # the effective value itself: valid, and always allowed (the common case)
    problems = itype.check(field, value)
    if problems or isinstance(value, bool) != isinstance(effective.values.get(field), bool):
        what = "; ".join(problems) or "wrong type"
        return Refusal(400, INVALID_VALUE, f"{param}: {what}", param)
    if value == current:
        return None
    fields = effective.choices.get("fields", {})
    if not effective.choices.get("overrides_allowed") or field not in fields:
        return Refusal(
            403,
            NOT_ALLOWED,
            f"{param}: this account's plan uses the platform settings; allowed: {_shown([current])}",
            param,
        )
    enum = fields[field].get("enum")
    if enum is not None and value not in enum:
        return Refusal(403, NOT_ALLOWED, f"{param}: allowed: {_shown(enum)}", param)
    return None


def _positive_int(value: Any) -> bool:
    # JSON true is a Python int: a count or a ceiling must be a number.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _ceiling(
    effective: merging.EffectiveIntegration, param: str, field: str, value: Any
) -> Refusal | None:
    limit = effective.values.get(field)
    if not _positive_int(value):
        return Refusal(400, INVALID_VALUE, f"{param}: must be a positive integer", param)
    if isinstance(limit, int) and value > limit:
        return Refusal(
            403,
            NOT_ALLOWED,
            f"{param}: above this account's limit; allowed: 1 to {limit}",
            param,
        )
    return None


def _fill(
    itype: catalog.IntegrationType,
    effective: merging.EffectiveIntegration,
    fields: Mapping[str, str],
    body: Mapping[str, Any],
    out: dict[str, Any],
    filled: list[str],
) -> Refusal | None:
    """Each request field (-> settings field): left out, the effective value goes into
    ``out`` (named in ``filled``); set, it must be one the account could choose."""
    for param, field in fields.items():
        if body.get(param) is None:
            if field in effective.values:
                out[param] = effective.values[field]
                filled.append(param)
            continue
        refused = check_field(itype, effective, param, field, body[param])
        if refused is not None:
            return refused
    return None


def _shape(body: Mapping[str, Any]) -> Refusal | None:
    """The fields every route reads the same way: ``n`` and ``stream``."""
    for param in MULTIPLIERS:
        value = body.get(param)
        if value is None:
            continue
        if not _positive_int(value):
            return Refusal(400, INVALID_VALUE, f"{param}: must be a positive integer", param)
        if value > 1:
            return Refusal(403, NOT_ALLOWED, f"{param}: one choice per request; allowed: 1", param)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return Refusal(400, INVALID_VALUE, "stream: must be true or false", "stream")
    return None


def chat(
    cat: catalog.Catalog, result: merging.AccountResult, body: Mapping[str, Any]
) -> Admitted | Refusal:
    """A chat completion request, checked and filled."""
    effective = _usable(result, CHAT)
    if isinstance(effective, Refusal):
        return effective
    shaped = _shape(body)
    if shaped is not None:
        return shaped
    itype = cat.integrations[CHAT]
    out = dict(body)
    filled: list[str] = []
    fields = {p: f for p, f in CHAT_FIELDS.items() if p not in CEILINGS}
    refused = _fill(itype, effective, fields, body, out, filled)
    if refused is not None:
        return refused
    ceilings = [p for p in CEILINGS if body.get(p) is not None]
    for param in ceilings:
        refused = _ceiling(effective, param, CEILINGS[param], body[param])
        if refused is not None:
            return refused
    if not ceilings and "max_tokens" in effective.values:
        out["max_tokens"] = effective.values["max_tokens"]
        filled.append("max_tokens")
    return Admitted(out, CHAT, _slot(cat, effective), tuple(filled))


def image(
    cat: catalog.Catalog, result: merging.AccountResult, body: Mapping[str, Any]
) -> Admitted | Refusal:
    """An image generation request, checked and filled."""
    effective = _usable(result, IMAGES)
    if isinstance(effective, Refusal):
        return effective
    service = effective.values.get("service")
    if service != "openai":
        return Refusal(
            501,
            NOT_IMPLEMENTED,
            f"this account's images use service {credentials.printable_name(str(service))!r}; "
            "the gateway serves image generation through OpenAI (DALL-E) only: a Runware route "
            "(its task API, the key in its authentication task) is not built",
            "service",
        )
    shaped = _shape(body)
    if shaped is not None:
        return shaped
    itype = cat.integrations[IMAGES]
    out = dict(body)
    filled: list[str] = []
    refused = _fill(itype, effective, IMAGE_FIELDS, body, out, filled)
    if refused is not None:
        return refused
    sizes = effective.values.get("sizes") or {}
    if body.get("size") is None:
        if sizes:
            out["size"] = sizes.get(PREFERRED_SIZE) or sizes[sorted(sizes)[0]]
            filled.append("size")
    else:
        refused = _size(itype, effective, body["size"], sizes)
        if refused is not None:
            return refused
    return Admitted(out, IMAGES, _slot(cat, effective), tuple(filled))


def _size(
    itype: catalog.IntegrationType,
    effective: merging.EffectiveIntegration,
    value: Any,
    sizes: Mapping[str, str],
) -> Refusal | None:
    """A size is one of the account's ``sizes``; a plan that may override may ask any size the
    schema admits (it could have declared it)."""
    item = itype.schema["properties"]["sizes"].get("additionalProperties", {})
    problems = itype.check("sizes", {"size": value}) if isinstance(value, str) else ["not a string"]
    if problems:
        pattern = item.get("pattern", "")
        return Refusal(400, INVALID_VALUE, f"size: must be WIDTHxHEIGHT ({pattern})", "size")
    if value in sizes.values():
        return None
    if effective.choices.get("overrides_allowed") and "sizes" in effective.choices.get(
        "fields", {}
    ):
        return None
    return Refusal(
        403, NOT_ALLOWED, f"size: allowed: {_shown(sorted(set(sizes.values())))}", "size"
    )


def _slot(cat: catalog.Catalog, effective: merging.EffectiveIntegration) -> str:
    """The key slot the request uses (``usedWhen``): the first the effective values select."""
    itype = cat.integrations[effective.type]
    for name, slot in itype.slots.items():
        if slot.provider is not None and slot.used_by(effective.values):
            return name
    return next(iter(itype.slots), "")


def models(result: merging.AccountResult) -> tuple[str, ...]:
    """The models this account may name: the effective ones, and for a plan that may override,
    every model ``allowedValues`` lists (a model the schema admits without a list cannot be
    listed: the effective one stands for it)."""
    found: list[str] = []
    for integration in (CHAT, IMAGES):
        effective = _find(result, integration)
        if effective is None or not effective.enabled:
            continue
        if integration == IMAGES and effective.values.get("service") != "openai":
            continue
        current = effective.values.get("model")
        if isinstance(current, str):
            found.append(current)
        field = effective.choices.get("fields", {}).get("model", {})
        if effective.choices.get("overrides_allowed"):
            found.extend(str(m) for m in field.get("enum", ()))
    return tuple(dict.fromkeys(found))
