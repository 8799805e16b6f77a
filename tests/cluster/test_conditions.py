"""Which outcome sets which kstatus condition: pure, every reason the operator writes."""

from __future__ import annotations

import pytest

from controller.cluster import conditions
from controller.core import findings

WAITING = [
    "NoGlobalSettings",
    "NoAccountForNamespace",
    "KeysMissing",
    "OutputFailed",
    "OutputConflict",
    "UnknownPlan",  # waits for the global (or the Account) to declare a known plan
]
STALLED = [
    r.value for r in findings.Reason if r.value not in WAITING and r is not findings.Reason.INACTIVE
] + ["GlobalNotSingleton"]


def _by_type(found: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {c["type"]: c for c in found}


def test_ready_clears_both() -> None:
    found = _by_type(conditions.readiness(True, "Applied", "applied: model", 3))
    assert [found[t]["status"] for t in ("Ready", "Reconciling", "Stalled")] == [
        "True",
        "False",
        "False",
    ]
    assert all(c["observedGeneration"] == 3 for c in found.values())


@pytest.mark.parametrize("reason", WAITING)
def test_waiting_for_something_outside_the_spec_is_reconciling(reason: str) -> None:
    found = _by_type(conditions.readiness(False, reason, "why", 1))
    assert (found["Ready"]["status"], found["Reconciling"]["status"]) == ("False", "True")
    assert found["Stalled"]["status"] == "False"
    assert found["Reconciling"]["message"] == "why"


@pytest.mark.parametrize("reason", STALLED)
def test_a_spec_error_is_stalled(reason: str) -> None:
    found = _by_type(conditions.readiness(False, reason, "why", 1))
    assert (found["Stalled"]["status"], found["Stalled"]["reason"]) == ("True", reason)
    assert found["Reconciling"]["status"] == "False"


def test_transition_time_kept_while_status_stays() -> None:
    first = conditions.readiness(False, "ValueRejected", "a", 1)
    stamped = [{**c, "lastTransitionTime": "then"} for c in first]
    again = _by_type(conditions.readiness(False, "FieldStripped", "b", 2, stamped))
    assert again["Stalled"]["lastTransitionTime"] == "then"
    flipped = _by_type(conditions.readiness(True, "Applied", "c", 3, stamped))
    assert flipped["Stalled"]["lastTransitionTime"] != "then"
