"""The ``status`` of each kind, computed from a merge result. Pure; never quotes a value."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from controller.cluster import bodies, conditions
from controller.core import declarations, findings, merging

Reason = findings.Reason

# Reasons of our own, for outcomes that are not core findings.
RECONCILED = "Reconciled"
APPLIED = "Applied"
VALID = "Valid"
KEYS_PRESENT = "KeysPresent"
KEYS_MISSING = "KeysMissing"
OUTPUT_FAILED = findings.Reason.OUTPUT_FAILED.value


def _joined(found: Iterable[findings.Finding]) -> str:
    return "; ".join(f.message for f in found)


def problems(observed: bodies.Observed) -> tuple[str, str]:
    """Reason and message for an object the core could not parse."""
    first = observed.problems[0].reason.value if observed.problems else "Invalid"
    return first, _joined(observed.problems) or "the object could not be read"


def with_ready(
    observed: bodies.Observed, ok: bool, reason: str, message: str, **extra: Any
) -> dict[str, Any]:
    previous = observed.status.get("conditions") or ()
    kept = [c for c in previous if c.get("type") != conditions.READY]
    ready = conditions.condition(
        conditions.READY, ok, reason, message, observed.generation, previous
    )
    return {
        "observedGeneration": observed.generation,
        "conditions": [ready, *kept],
        **extra,
    }


def account(
    observed: bodies.Observed, result: merging.AccountResult, namespace: str
) -> dict[str, Any]:
    badges = ", ".join(
        f"{i.type}: "
        + ("platform defaults" if i.using_global else f"custom {', '.join(i.overridden)}")
        for i in result.integrations
    )
    notes = [f for f in result.findings if f.ref == observed_ref(observed)]
    message = f"effective settings written to {namespace}/integration-settings ({badges})"
    if notes:
        message += ". " + _joined(notes)
    return with_ready(
        observed,
        True,
        RECONCILED,
        message,
        usingGlobal=result.using_global,
        # Not the content hash (the ConfigMap's annotation carries it): a change of
        # a global default would otherwise cost every affected account a status
        # write on top of its ConfigMap write. None removes one written before.
        contentHash=None,
    )


def observed_ref(observed: bodies.Observed) -> findings.ObjectRef | None:
    decl = observed.declaration
    if isinstance(decl, declarations.Account | declarations.IntegrationSettings):
        return decl.ref
    return None


def override(
    observed: bodies.Observed,
    result: merging.AccountResult,
    account_notes: Sequence[findings.Finding],
) -> dict[str, Any]:
    decl = observed.declaration
    if not isinstance(decl, declarations.IntegrationSettings):
        reason, message = problems(observed)
        return with_ready(observed, False, reason, message, appliedFields=[])
    mine = [f for f in result.findings if f.ref == decl.ref]
    applied = next((list(i.overridden) for i in result.integrations if i.type == decl.type), [])
    errors = [f for f in mine if f.is_error]
    if decl.is_active and account_notes:
        # The plan refuses overrides: say so first.
        first = account_notes[0]
        ok, reason, message = False, first.reason.value, _joined([*account_notes, *errors])
    elif errors:
        ok, reason, message = False, errors[0].reason.value, _joined(errors)
    elif mine:
        note = mine[0]
        ok = note.reason is Reason.INACTIVE
        reason, message = note.reason.value, _joined(mine)
    else:
        ok, reason = True, APPLIED
        message = f"applied: {', '.join(applied)}" if applied else "no override fields declared"
    return with_ready(observed, ok, reason, message, appliedFields=applied)


def blocked(observed: bodies.Observed, reason: str, message: str) -> dict[str, Any]:
    """Ready=False for an object the operator cannot act on (its account, the global)."""
    extra: dict[str, Any] = {}
    if isinstance(observed.declaration, declarations.IntegrationSettings):
        extra["appliedFields"] = []
    return with_ready(observed, False, reason, message, **extra)


def global_(observed: bodies.Observed, missing: Sequence[str], referenced: int) -> dict[str, Any]:
    decl = observed.declaration
    if not isinstance(decl, declarations.GlobalSettings):
        reason, message = problems(observed)
        status = with_ready(observed, False, reason, message)
    else:
        enabled = [t for t, i in decl.integrations.items() if i.enabled]
        status = with_ready(
            observed,
            True,
            VALID,
            f"{len(decl.integrations)} integrations ({len(enabled)} enabled), "
            f"{len(decl.plans)} plans",
        )
    previous = observed.status.get("conditions") or ()
    if missing:
        creds = conditions.condition(
            conditions.CREDENTIALS_READY,
            False,
            KEYS_MISSING,
            "missing or empty Secret keys: " + ", ".join(missing),
            observed.generation,
            previous,
        )
    else:
        creds = conditions.condition(
            conditions.CREDENTIALS_READY,
            True,
            KEYS_PRESENT,
            f"all {referenced} referenced Secret keys exist and are not empty",
            observed.generation,
            previous,
        )
    status["conditions"] = [
        c for c in status["conditions"] if c["type"] != conditions.CREDENTIALS_READY
    ] + [creds]
    return status
