"""``status.conditions`` as the Kubernetes API conventions describe them.

A condition keeps its ``lastTransitionTime`` while its status stays the same,
so recomputing an unchanged state yields an identical status: nothing to patch.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

READY = "Ready"
CREDENTIALS_READY = "CredentialsReady"

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


def find(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for item in status.get("conditions") or ():
        if item.get("type") == type_:
            return item  # type: ignore[no-any-return]
    return None


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether ``after`` says something ``before`` does not (fields ``after`` leaves out are kept)."""
    return any(before.get(key) != value for key, value in after.items())
