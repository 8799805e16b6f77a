"""One account's override fields, screened: which may apply, and a finding for each of the rest.

Shared by the merge (with the global's ``allowedValues``) and by the parse of
an object that failed its schema (without them): a ``spec.bogus`` next to a
bad ``temperature`` reports both in one run rather than the first alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from controller.core import catalog, credentials, findings, validation

Reason = findings.Reason

KEY_HINT = (
    "platform keys cannot be set by an account; they come from the GlobalIntegrationSettings "
    "credentials (a Secret)"
)
# The same words as a sentence of their own, after a full stop.
KEY_SENTENCE = KEY_HINT[0].upper() + KEY_HINT[1:]


def fields(
    cat: catalog.Catalog,
    itype: catalog.IntegrationType,
    overrides: Mapping[str, Any],
    allowed_values: Mapping[str, Sequence[Any]] | None,
    ref: findings.ObjectRef,
    source: Hashable,
) -> tuple[dict[str, Any], list[findings.Finding]]:
    """Split ``overrides`` into the fields that may apply and findings for the rest.

    ``allowed_values`` None: the global is not known, so only the schemas of
    schemas/integrations/ and the key rules are checked.
    """
    accepted: dict[str, Any] = {}
    found: list[findings.Finding] = []

    def reject(reason: Reason, field: str, text: str) -> None:
        path = ("spec", "overrides", field)
        found.append(
            findings.error(reason, f"{validation.dotted(path)}: {text}", ref, path, source)
        )

    for field in sorted(overrides, key=str):
        value = overrides[field]
        if field not in itype.fields:
            if cat.looks_like_credential(field) or credentials.looks_like_key_value(field):
                reject(Reason.CREDENTIAL_STRIPPED, field, "stripped: " + KEY_HINT)
            else:
                reject(
                    Reason.FIELD_STRIPPED,
                    field,
                    f"stripped: not an overridable field of {itype.name} "
                    f"(overridable: {', '.join(itype.fields)})",
                )
        elif any(cat.looks_like_credential(n) for n in credentials.nested_names(value)):
            reject(
                Reason.CREDENTIAL_STRIPPED,
                field,
                "stripped: it contains a key-like field. " + KEY_SENTENCE,
            )
        elif any(
            map(
                credentials.looks_like_key_value,
                (*credentials.nested_names(value), *credentials.nested_values(value)),
            )
        ):
            reject(
                Reason.CREDENTIAL_STRIPPED,
                field,
                "rejected: the value looks like an API key. " + KEY_SENTENCE,
            )
        else:
            problems = itype.check(field, value)
            choices = (allowed_values or {}).get(field)
            if not problems and choices is not None and value not in choices:
                problems = [f"must be one of the allowed values: {', '.join(map(str, choices))}"]
            if problems:
                reject(Reason.VALUE_REJECTED, field, "rejected: " + "; ".join(problems))
            else:
                accepted[field] = value
    return accepted, found
