"""Statuses built without a cluster: the Account's Ready message, the fields each writer names."""

from __future__ import annotations

import json
import re

from controller.cluster import conditions, reporting, statuses
from controller.cluster.runtime import records
from controller.core import catalog as catalog_
from controller.core import merging
from tests.core import builders


def test_the_notes_of_a_ready_account_follow_a_semicolon(catalog: catalog_.Catalog) -> None:
    """Joined by ". ", a note ("plan 'free' may not override…") read as a sentence in lower case."""
    account = builders.parsed(catalog, builders.account_body(plan="free"))
    override = builders.parsed(catalog, builders.override_body(overrides={"model": "gpt-4o"}))
    result = merging.merge_account(
        catalog,
        builders.parsed(catalog, builders.global_body()),
        account,
        {"openai": override},
    )
    observed = records.Observed("Account", account.name, None, "uid-1", 1, account, ())
    status = statuses.account(observed, result, account.namespace)
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Ready")
    assert "; plan 'free' may not override defaults" in message, message
    assert not re.search(r"\. [a-z]", message), message


def _account_status(
    catalog: catalog_.Catalog, status: dict[str, object]
) -> tuple[records.Observed, merging.AccountResult]:
    account = builders.parsed(catalog, builders.account_body())
    result = merging.merge_account(
        catalog, builders.parsed(catalog, builders.global_body()), account, {}
    )
    observed = records.Observed(
        "Account", account.name, None, "uid-1", 1, account, (), json.dumps(status)
    )
    return observed, result


def test_the_reconciler_names_only_its_own_conditions_and_a_status_it_did_not_change_is_unchanged(
    catalog: catalog_.Catalog,
) -> None:
    """Applied under its field manager, the status names Ready, Reconciling and Stalled
    only: never the checker's Connected, which it would otherwise own, and overwrite from
    a stale view. Another writer's condition is no change to write."""
    theirs = {"type": "Connected", "status": "False", "reason": "InvalidKey", "message": "x"}
    observed, result = _account_status(catalog, {"conditions": [theirs]})
    status = statuses.account(observed, result, "ns")
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Reconciling", "Stalled"]
    assert conditions.changed(observed.status, status)
    seen = {**status, "conditions": [theirs, *reversed(status["conditions"])]}
    assert not conditions.changed(seen, status)  # theirs kept, ours as they were, any order
    ready = {**status["conditions"][0], "message": "another"}
    assert conditions.changed({**seen, "conditions": [theirs, ready]}, status)


def test_connected_is_kept_until_known_and_what_goes_is_removed_whoever_wrote_it(
    catalog: catalog_.Catalog,
) -> None:
    """No answer from the checks (None): the observed ``connected`` is sent back as it is
    (an apply leaving it out would remove it). An answer replaces it; the types that go
    are removed with a merge patch (``reporting._removed``), as an older write owns them."""
    observed, result = _account_status(catalog, {"connected": {"openai": True, "dalle": True}})
    kept = statuses.account(observed, result, "ns")
    assert kept["connected"] == {"openai": True, "dalle": True}
    assert reporting._removed(observed.status, kept) == {}
    answered = statuses.account(observed, result, "ns", connected={"openai": False})
    assert answered["connected"] == {"openai": False}
    assert reporting._removed(observed.status, answered) == {"connected": ["dalle"]}
    assert reporting._removed(observed.status, {"connected": None}) == {"connected": None}
    assert reporting._removed({}, answered) == {}
