"""``status.conditions`` as the Kubernetes API conventions describe them.

A condition keeps its ``lastTransitionTime`` while its status stays the same,
so recomputing an unchanged state yields an identical status: nothing to patch.

Every object carries ``Ready`` and the two "abnormal-true" conditions kstatus
reads (``sigs.k8s.io/cli-utils/pkg/kstatus``, behind Flux's health checks and
our Argo CD health.lua): ``Reconciling`` while the operator still has work for
this generation (it waits for something outside the object, or retries a
failed write), ``Stalled`` for an error that only a change of the spec fixes.
The time between a spec change and the operator's first look at it needs no
condition: ``status.observedGeneration`` lags ``metadata.generation`` then,
which kstatus and Argo CD read as in progress.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from controller.core import findings

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CREDENTIALS_READY = "CredentialsReady"

# Not Ready for a reason outside the object's own spec: the operator acts by
# itself once it is gone (a global or an Account appears, a key is added to
# its Secret, a write succeeds on retry), so the object is in progress, not
# failed. Every other reason for Ready=False is a spec error: Stalled.
KEYS_MISSING = "KeysMissing"
ACCOUNT_NOT_READY = "AccountNotReady"  # an override whose account's outputs cannot be written
WAITING_REASONS = frozenset(
    {
        findings.Reason.NO_GLOBAL.value,
        findings.Reason.ORPHAN_OVERRIDE.value,
        findings.Reason.OUTPUT_FAILED.value,
        findings.Reason.OUTPUT_CONFLICT.value,  # someone else's object in the way
        KEYS_MISSING,
        # The global does not declare the Account's plan: it waits for either to change.
        findings.Reason.UNKNOWN_PLAN.value,
        ACCOUNT_NOT_READY,
    }
)

# The API server's limit on a condition message.
_MAX_MESSAGE = 32768


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == type_), None)
    since = (
        before["lastTransitionTime"]
        if before is not None and before.get("status") == status and "lastTransitionTime" in before
        else now()
    )
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
    }


def readiness(
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """``Ready``, ``Reconciling`` and ``Stalled`` for one outcome, in that order."""
    waiting = not ok and reason in WAITING_REASONS
    stalled = not ok and not waiting
    return [
        condition(READY, ok, reason, message, generation, previous),
        condition(
            RECONCILING,
            waiting,
            reason,
            message if waiting else "no work pending for this generation",
            generation,
            previous,
        ),
        condition(
            STALLED,
            stalled,
            reason,
            message if stalled else "no spec error",
            generation,
            previous,
        ),
    ]


def find(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for item in status.get("conditions") or ():
        if item.get("type") == type_:
            return item  # type: ignore[no-any-return]
    return None


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether ``after`` says something ``before`` does not (fields ``after`` leaves out are
    kept; so are the conditions of a type it leaves out: another writer's, applied
    under its own field manager)."""
    for key, value in after.items():
        if key == "conditions":
            seen = {c.get("type"): c for c in before.get(key) or ()}
            if any(seen.get(c.get("type")) != c for c in value or ()):
                return True
        elif before.get(key) != value:
            return True
    return False
