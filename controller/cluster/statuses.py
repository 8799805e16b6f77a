"""The ``status`` of each kind, computed from a merge result. Pure; never quotes a value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller.cluster import conditions
from controller.cluster.runtime import records, secrets
from controller.core import declarations, findings, merging, rendering

Reason = findings.Reason

# Reasons of our own, for outcomes that are not core findings.
RECONCILED = "Reconciled"
APPLIED = "Applied"
VALID = "Valid"
KEYS_PRESENT = "KeysPresent"
KEYS_MISSING = conditions.KEYS_MISSING
ACCOUNT_NOT_READY = conditions.ACCOUNT_NOT_READY
OUTPUT_FAILED = findings.Reason.OUTPUT_FAILED.value


def _joined(found: Iterable[findings.Finding]) -> str:
    return "; ".join(f.message for f in found)


def problems(observed: records.Observed) -> tuple[str, str]:
    """Reason and message for an object the core could not parse."""
    first = observed.problems[0].reason.value if observed.problems else "Invalid"
    return first, _joined(observed.problems) or "the object could not be read"


def with_ready(
    observed: records.Observed,
    ok: bool,
    reason: str,
    message: str,
    current: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The reconciler's own status fields: ``Ready``, ``Reconciling`` and ``Stalled`` (the
    conditions of other types are another writer's: ``Connected``, the connection checker's),
    ``observedGeneration`` and ``extra``. Applied under the reconciler's field manager
    (``reporting``), so it names only what it owns."""
    if current is None:  # ``current``: ``observed.status``, when the caller decoded it already
        current = observed.status
    previous = current.get("conditions") or ()
    if "connected" not in extra and current.get("connected") is not None:
        # Not recomputed here (the object is blocked, or the connection checks have no
        # answer for every key yet, or are off): kept as it is.
        extra["connected"] = current["connected"]
    return {
        "observedGeneration": observed.generation,
        "conditions": conditions.readiness(ok, reason, message, observed.generation, previous),
        **extra,
    }


def missing_keys(
    global_: declarations.GlobalSettings, result: merging.AccountResult, keys: secrets.PlatformKeys
) -> list[str]:
    """The platform keys this account's enabled integrations need and the Secrets lack,
    as ``secret/key (type.slot)`` references: never a value. None for a plan that gets
    no keys (``projectKeys: false``, or a plan the global does not declare)."""
    if not global_.projects_keys(result.account.plan):
        return []
    return [
        f"{ref.secret_name}/{ref.key} ({integration.type}.{slot})"
        for integration in result.integrations
        if integration.enabled
        for slot, ref in global_.integrations[integration.type].credentials.items()
        if keys.value(ref.secret_name, ref.key) is None
    ]


def account(
    observed: records.Observed,
    result: merging.AccountResult,
    namespace: str,
    missing: Sequence[str] = (),
    connected: Mapping[str, bool] | None = None,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Ready once the outputs are written; not while a key it needs is missing
    (``missing``: from ``missing_keys``), which leaves it out of the account's
    credentials Secret. ``connected``: per enabled integration, whether the keys its
    settings use are connected (``connections.services_connected``; None: not known,
    kept as it is)."""
    badges = result.summary
    notes = [f for f in result.findings if f.ref == observed_ref(observed)]
    message = f"effective settings written to {namespace}/integration-settings ({badges})"
    if notes:
        # "; ", not ". ": a note begins with a field or a lower-case clause, not a sentence.
        message += "; " + _joined(notes)
    if missing:
        message = (
            f"missing or empty platform keys, left out of {namespace}/"
            f"{rendering.CREDENTIALS_SECRET_NAME}: {', '.join(missing)}; {message}"
        )
    ok, reason = not missing, KEYS_MISSING if missing else RECONCILED
    if any(f.reason is Reason.UNKNOWN_PLAN for f in notes):
        # Least privilege is written (defaults, no keys), not what the Account asks for:
        # not Ready, and waiting (Reconciling) for the global or the Account to change.
        ok, reason = False, Reason.UNKNOWN_PLAN.value
        message = f"{_joined(notes)}; written to {namespace}/integration-settings ({badges})"
    return with_ready(
        observed,
        ok,
        reason,
        message,
        current,
        # Not the content hash (the ConfigMap's annotation carries it): a change of
        # a global default would otherwise cost every affected account a status
        # write on top of its ConfigMap write.
        usingGlobal=result.using_global,
        **({} if connected is None else {"connected": dict(connected)}),
    )


def observed_ref(observed: records.Observed) -> findings.ObjectRef | None:
    decl = observed.declaration
    if isinstance(decl, declarations.Account | declarations.IntegrationSettings):
        return decl.ref
    return None


def override(
    observed: records.Observed,
    result: merging.AccountResult,
    account_notes: Sequence[findings.Finding],
    connected: Mapping[str, bool] | None = None,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``connected``: the account's (see ``account``); this override's type is shown,
    None where its type uses no checked key."""
    decl = observed.declaration
    if not isinstance(decl, declarations.IntegrationSettings):
        reason, message = problems(observed)
        return with_ready(observed, False, reason, message, current, appliedFields=[])
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
    extra: dict[str, Any] = {"appliedFields": applied}
    if connected is not None:
        extra["connected"] = connected.get(decl.type)
    return with_ready(observed, ok, reason, message, current, **extra)


def blocked(observed: records.Observed, reason: str, message: str) -> dict[str, Any]:
    """Ready=False for an object the operator cannot act on (its account, the global)."""
    extra: dict[str, Any] = {}
    if isinstance(observed.declaration, declarations.IntegrationSettings):
        extra["appliedFields"] = []
    return with_ready(observed, False, reason, message, **extra)


def global_(observed: records.Observed, missing: Sequence[str], referenced: int) -> dict[str, Any]:
    decl = observed.declaration
    if not isinstance(decl, declarations.GlobalSettings):
        reason, message = problems(observed)
        status = with_ready(observed, False, reason, message)
    elif missing:
        # Not Ready: the accounts that need these keys go without them.
        status = with_ready(
            observed, False, KEYS_MISSING, "missing or empty Secret keys: " + ", ".join(missing)
        )
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
    status["conditions"] = [*status["conditions"], creds]
    return status
