"""A plan the global does not declare gets least privilege (issue 20, break 5).

Renaming plan ``free`` to ``starter`` in the global before the Accounts are
updated left Accounts on ``free`` Ready with every platform key in their
``integration-credentials``. Now such an Account gets the defaults, no
overrides and no keys, and says which plan is missing until the global (or
the Account) changes.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import condition, settings, wait_json

pytestmark = pytest.mark.cluster


def _rename_plan(kube: Kube, old: str, new: str, allow_overrides: bool) -> None:
    patch = {"spec": {"plans": {old: None, new: {"allowOverrides": allow_overrides}}}}
    kube.kubectl(
        "patch", "globalintegrationsettings", "default", "--type=merge", "-p", json.dumps(patch)
    )


def _keys(secret: support.Json) -> set[str]:
    return set(secret.get("data") or {})


def test_a_plan_renamed_in_the_global_leaves_its_accounts_no_keys(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns, plan="free"))
    # Declared: the free plan gets the keys its integrations need, and is Ready.
    wait_json(
        installed,
        ("secret", "integration-credentials", "-n", tenant_ns),
        lambda s: len(_keys(s)) == 3,
        what="the three platform keys while 'free' is declared",
    )
    wait_json(
        installed,
        ("account", tenant_ns),
        lambda a: condition(a)["status"] == "True",
    )

    _rename_plan(installed, "free", "starter", False)
    try:
        account = wait_json(
            installed,
            ("account", tenant_ns),
            lambda a: condition(a)["reason"] == "UnknownPlan",
            what="Ready=False, UnknownPlan",
        )
        ready, reconciling = condition(account), condition(account, "Reconciling")
        assert ready["status"] == "False"
        assert "'free'" in ready["message"] and "starter" in ready["message"]
        assert reconciling["status"] == "True" and reconciling["reason"] == "UnknownPlan"
        assert condition(account, "Stalled")["status"] == "False"
        secret = wait_json(
            installed,
            ("secret", "integration-credentials", "-n", tenant_ns),
            lambda s: not _keys(s),
            what="no platform key for an undeclared plan",
        )
        assert _keys(secret) == set()
        configmap = support.get_json(
            installed, "configmap", "integration-settings", "-n", tenant_ns
        )
        assert settings(configmap, "openai")["using_global"] is True
        assert settings(configmap, "openai")["choices"]["overrides_allowed"] is False
        events = support.get_json(
            installed,
            "events",
            "-n",
            "default",
            "--field-selector",
            f"involvedObject.name={tenant_ns},reason=UnknownPlan",
        )
        assert events["items"], "a Warning Event says why"
    finally:
        _rename_plan(installed, "starter", "free", False)

    # The global declares the plan again: the keys come back, Ready again.
    wait_json(
        installed,
        ("secret", "integration-credentials", "-n", tenant_ns),
        lambda s: len(_keys(s)) == 3,
        what="the keys back once 'free' is declared again",
    )
    wait_json(installed, ("account", tenant_ns), lambda a: condition(a)["status"] == "True")
    installed.kubectl("delete", "account", tenant_ns, "--wait=false")


def test_an_account_moved_to_an_undeclared_plan_loses_its_overrides_and_keys(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """The other side of the same gap: the Account changes, the global does not."""
    support.apply_text(
        installed, support.override_manifest(tenant_ns, "openai", {"model": "gpt-4o"})
    )
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns, plan="pro"))
    wait_json(
        installed,
        ("configmap", "integration-settings", "-n", tenant_ns),
        lambda cm: settings(cm, "openai")["model"] == "gpt-4o",
    )
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns, plan="gold"))
    configmap = wait_json(
        installed,
        ("configmap", "integration-settings", "-n", tenant_ns),
        lambda cm: settings(cm, "openai")["using_global"] is True,
        what="the override no longer applied",
    )
    assert settings(configmap, "openai")["model"] == "gpt-4o-mini"
    wait_json(
        installed,
        ("secret", "integration-credentials", "-n", tenant_ns),
        lambda s: not _keys(s),
        what="no platform key for plan 'gold'",
    )
    override = wait_json(
        installed,
        ("integrationsettings", "openai", "-n", tenant_ns),
        lambda o: condition(o)["reason"] == "UnknownPlan",
    )
    assert condition(override)["status"] == "False"
    assert "'gold'" in condition(override)["message"]
    installed.kubectl("delete", "account", tenant_ns, "--wait=false")


def _metric(text: str, outcome: str) -> float:
    line = f'settings_controller_events_total{{outcome="{outcome}"}}'
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def test_warning_events_of_one_object_are_aggregated_and_bounded(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """Issue 20, break 10: 150 edits in 20 s posted 151 Warning Events. Now at most the
    burst (25) reach the API server per object, similar ones combined into one Event with
    a count; the counts add up to the writes made."""
    edits = 60
    before = operator.metrics()
    for i in range(edits):
        support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns, f"p{i}"))
    account = wait_json(
        installed,
        ("account", tenant_ns),
        lambda a: f"'p{edits - 1}'" in condition(a)["message"],
        what="the last plan's UnknownPlan condition (the status is never rate-limited)",
    )
    uid = account["metadata"]["uid"]

    def listed() -> list[support.Json]:
        selector = f"involvedObject.uid={uid}"
        found = support.get_json(installed, "events", "-n", "default", "--field-selector", selector)
        return list(found["items"])

    support.until(
        lambda: (
            any(f"'p{edits - 1}'" in e["message"] for e in listed())
            or _metric(operator.metrics(), "suppressed") > _metric(before, "suppressed")
        ),
        "the last Warning written, or suppressed by the object's bucket",
    )
    events = listed()
    assert 1 <= len(events) <= 25, [e["message"] for e in events]
    assert _metric(operator.metrics(), "suppressed") > _metric(before, "suppressed")
    counts = sum(int(e.get("count") or 1) for e in events)
    assert counts <= 25
    after = operator.metrics()
    written = sum(_metric(after, o) - _metric(before, o) for o in ("created", "aggregated"))
    assert counts == written
    combined = [e for e in events if e["message"].startswith("(combined from similar events): ")]
    assert len(combined) == 1 and combined[0]["count"] > 1
    installed.kubectl("delete", "account", tenant_ns, "--wait=false")
