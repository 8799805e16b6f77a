"""The seed's scenarios, driven with ``kubectl apply -f examples/`` against the operator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import GROUP, condition, settings, wait_json

pytestmark = pytest.mark.cluster

ACCOUNTS = ("acct-123", "acct-456", "acct-789", "acct-free", "acct-paused")
EXAMPLES = support.REPO / "examples"
OPENAI_DEFAULTS = {"model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 8192}


def configmap(kube: Kube, namespace: str, predicate: Any = lambda cm: True) -> dict[str, Any]:
    return wait_json(
        kube,
        ("configmap", "integration-settings", "-n", namespace),
        predicate,
        what=f"{namespace}/integration-settings",
    )


@pytest.fixture(scope="module")
def applied(operator: support.Operator, installed: Kube) -> Iterator[tuple[Kube, Any]]:
    kube = installed
    _remove_examples(kube)  # a previous run's, or a person's
    for name in ACCOUNTS:
        support.wait_gone(kube, ("namespace", name), timeout=90)
    # First pass: the Accounts and the global go in; the overrides cannot yet,
    # because their namespaces do not exist. The operator creates them.
    kube.kubectl("apply", "-R", "-f", str(EXAMPLES), check=False)
    for name in ACCOUNTS:
        wait_json(
            kube,
            ("namespace", name),
            lambda ns: f"{GROUP}/plan" in ns["metadata"]["labels"],
            what=f"namespace {name} created and labelled with its plan",
        )
    second = kube.kubectl("apply", "-R", "-f", str(EXAMPLES), check=False)
    yield kube, second
    kube.kubectl("apply", "-f", str(EXAMPLES / "global.yaml"))
    _remove_examples(kube)


def _remove_examples(kube: Kube) -> None:
    kube.kubectl("delete", "account", *ACCOUNTS, "--ignore-not-found", "--wait=false")
    kube.kubectl("delete", "namespace", *ACCOUNTS, "--ignore-not-found", "--wait=false")


def test_apply_refuses_exactly_the_free_override(applied: tuple[Kube, Any]) -> None:
    _, second = applied
    assert second.returncode != 0
    # The plan policy refuses the free account's override at admission.
    assert "plan free may not override" in second.stderr
    errors = [line for line in second.stderr.splitlines() if "Error from server" in line]
    assert len(errors) == 1, second.stderr
    for name in ("acct-456", "acct-789", "acct-paused", "acct-123"):
        assert f"account.{GROUP}/{name}" in second.stdout


def test_new_user_gets_the_platform_defaults(applied: tuple[Kube, Any]) -> None:
    kube, _ = applied
    cm = configmap(kube, "acct-789")
    openai = settings(cm, "openai")
    assert {k: openai[k] for k in OPENAI_DEFAULTS} == OPENAI_DEFAULTS
    assert openai["using_global"] is True and openai["overridden"] == []
    assert settings(cm, "image_generation")["using_global"] is True
    account = wait_json(
        kube,
        ("account", "acct-789"),
        lambda a: condition(a)["status"] == "True",
    )
    assert account["status"]["usingGlobal"] == {"image_generation": True, "openai": True}
    owners = cm["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Account", "acct-789", account["metadata"]["uid"])
    ]


def test_customised_accounts_get_their_overrides(applied: tuple[Kube, Any]) -> None:
    kube, _ = applied
    cm = configmap(kube, "acct-456", lambda cm: settings(cm, "openai")["model"] == "gpt-4.1")
    openai = settings(cm, "openai")
    assert (openai["model"], openai["max_tokens"], openai["temperature"]) == ("gpt-4.1", 4000, 0.7)
    assert openai["using_global"] is False and openai["overridden"] == ["max_tokens", "model"]
    assert settings(cm, "image_generation")["using_global"] is True

    cm = configmap(
        kube, "acct-123", lambda cm: settings(cm, "image_generation")["service"] == "runware"
    )
    assert settings(cm, "openai")["model"] == "gpt-4o"
    assert settings(cm, "openai")["temperature"] == 0.8
    images = settings(cm, "image_generation")
    assert (images["model"], images["overridden"]) == ("runware:100@1", ["model", "service"])

    override = wait_json(
        kube,
        ("integrationsettings", "openai", "-n", "acct-456"),
        support.is_current,
    )
    assert condition(override)["status"] == "True"
    assert override["status"]["appliedFields"] == ["max_tokens", "model"]


def test_paused_overrides_are_kept_but_not_applied(applied: tuple[Kube, Any]) -> None:
    kube, _ = applied
    cm = configmap(kube, "acct-paused")
    assert settings(cm, "openai")["using_global"] is True
    paused = wait_json(
        kube, ("integrationsettings", "openai", "-n", "acct-paused"), support.is_current
    )
    assert condition(paused)["reason"] == "OverrideInactive"
    assert paused["status"]["appliedFields"] == []


def test_printer_columns_show_platform_defaults(applied: tuple[Kube, Any]) -> None:
    kube, _ = applied
    wait_json(kube, ("account", "acct-123"), lambda a: "usingGlobal" in a.get("status", {}))
    table = kube.kubectl("get", "accounts", *ACCOUNTS[:3]).stdout
    header, *rows = table.splitlines()
    assert header.split()[:8] == [
        "NAME",
        "PLAN",
        "NAMESPACE",
        "IMAGE-GENERATION-DEFAULTS",
        "OPENAI-DEFAULTS",
        "IMAGE-GENERATION-CONNECTED",  # empty here: the session's operator checks no key
        "OPENAI-CONNECTED",
        "READY",
    ]
    # The CONNECTED cells are empty, so READY, REASON and AGE are the last three words.
    assert header.split()[8:] == ["REASON", "AGE"]
    by_name = {row.split()[0]: [*row.split()[3:5], row.split()[-3]] for row in rows}
    assert by_name["acct-123"] == ["false", "false", "True"], table
    assert by_name["acct-456"] == ["true", "false", "True"]
    assert by_name["acct-789"] == ["true", "true", "True"]


def test_reset_by_deleting_the_override(applied: tuple[Kube, Any]) -> None:
    kube, _ = applied
    configmap(kube, "acct-456", lambda cm: settings(cm, "openai")["model"] == "gpt-4.1")
    kube.kubectl("delete", "integrationsettings", "openai", "-n", "acct-456")
    cm = configmap(kube, "acct-456", lambda cm: settings(cm, "openai")["using_global"])
    openai = settings(cm, "openai")
    assert {k: openai[k] for k in OPENAI_DEFAULTS} == OPENAI_DEFAULTS
    wait_json(
        kube,
        ("account", "acct-456"),
        lambda a: a["status"]["usingGlobal"]["openai"] is True,
    )


def test_admin_changes_the_global(applied: tuple[Kube, Any], operator: support.Operator) -> None:
    kube, _ = applied
    configmap(kube, "acct-123", lambda cm: settings(cm, "openai")["temperature"] == 0.8)
    before = _fanouts(operator)
    patch = {
        "spec": {"integrations": {"openai": {"defaults": {"temperature": 0.3, "max_tokens": 2048}}}}
    }
    kube.kubectl(
        "patch", "globalintegrationsettings", "default", "--type=merge", "-p", json.dumps(patch)
    )
    # Non-overriders follow the new defaults...
    cm = configmap(kube, "acct-789", lambda cm: settings(cm, "openai")["temperature"] == 0.3)
    assert settings(cm, "openai")["max_tokens"] == 2048
    # ...overriders keep their value and take the defaults they do not override.
    cm = configmap(kube, "acct-123", lambda cm: settings(cm, "openai")["max_tokens"] == 2048)
    assert settings(cm, "openai")["temperature"] == 0.8
    assert _fanouts(operator) > before


def _fanouts(operator: support.Operator) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("settings_controller_fanout_accounts_count "):
            return float(line.split()[1])
    raise AssertionError("no fan-out metric")
