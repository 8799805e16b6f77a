"""Drift, garbage collection, plan changes, restarts, and the operator's own footprint."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube
from tests.operator import fixtures, support
from tests.operator.support import GROUP, condition, settings, wait_gone, wait_json

pytestmark = pytest.mark.cluster


@pytest.fixture
def account(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[str]:
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    support.apply_text(
        installed, support.override_manifest(tenant_ns, "openai", {"model": "gpt-4o"})
    )
    wait_json(
        installed,
        ("configmap", "integration-settings", "-n", tenant_ns),
        lambda cm: settings(cm, "openai")["model"] == "gpt-4o",
    )
    wait_json(installed, ("secret", "integration-credentials", "-n", tenant_ns), lambda s: True)
    yield tenant_ns
    installed.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


def cm_args(ns: str) -> tuple[str, ...]:
    return ("configmap", "integration-settings", "-n", ns)


def secret_args(ns: str) -> tuple[str, ...]:
    return ("secret", "integration-credentials", "-n", ns)


def test_hand_edits_and_deletions_are_reverted(installed: Kube, account: str) -> None:
    kube = installed
    good = support.get_json(kube, *cm_args(account))["data"]
    edited = {"data": {"openai.json": '{"model": "hand-edited"}'}}
    kube.kubectl("patch", *cm_args(account), "--type=merge", "-p", json.dumps(edited))
    wait_json(kube, cm_args(account), lambda cm: cm["data"] == good, what="ConfigMap reverted")

    kube.kubectl("delete", *cm_args(account))
    wait_json(kube, cm_args(account), lambda cm: cm["data"] == good, what="ConfigMap recreated")

    keys = support.get_json(kube, *secret_args(account))["data"]
    bogus = base64.b64encode(b"not-the-key").decode()
    kube.kubectl(
        "patch",
        *secret_args(account),
        "--type=merge",
        "-p",
        json.dumps({"data": {"openai.apiKey": bogus}}),
    )
    wait_json(kube, secret_args(account), lambda s: s["data"] == keys, what="Secret reverted")
    kube.kubectl("delete", *secret_args(account))
    wait_json(kube, secret_args(account), lambda s: s["data"] == keys, what="Secret recreated")


def test_deleting_the_account_collects_its_outputs(installed: Kube, account: str) -> None:
    installed.kubectl("delete", "account", account)
    wait_gone(installed, cm_args(account), timeout=60)
    wait_gone(installed, secret_args(account), timeout=60)
    # The tenant's namespace and its own objects stay.
    ns = support.get_json(installed, "namespace", account)
    assert ns["status"]["phase"] == "Active"
    installed.kubectl("get", "integrationsettings", "openai", "-n", account)


def test_a_plan_that_may_not_override_is_ignored_and_refused(installed: Kube, account: str) -> None:
    kube = installed
    kube.kubectl("patch", "account", account, "--type=merge", "-p", '{"spec": {"plan": "free"}}')
    # The operator stops applying the override it already had...
    wait_json(kube, cm_args(account), lambda cm: settings(cm, "openai")["using_global"] is True)
    override = wait_json(
        kube,
        ("integrationsettings", "openai", "-n", account),
        lambda o: condition(o).get("reason") == "PlanForbidsOverrides",
    )
    assert condition(override)["status"] == "False"
    assert override["status"]["appliedFields"] == []
    wait_json(
        kube,
        ("events", "-n", account, "--field-selector", "involvedObject.name=openai"),
        lambda e: any(i["reason"] == "PlanForbidsOverrides" for i in e["items"]),
    )
    # ...and admission refuses new ones once the namespace carries the new plan.
    wait_json(
        kube,
        ("namespace", account),
        lambda ns: ns["metadata"]["labels"][f"{GROUP}/plan"] == "free",
    )
    manifest = support.override_manifest(account, "image-generation", {"image_quality": "hd"})

    def refused(*dry_run: str) -> bool:
        proc = kube.kubectl("apply", *dry_run, "-f", "-", input=manifest, check=False)
        return proc.returncode != 0 and "plan free may not override" in proc.stderr

    # The API server's policy sees the namespace label through its own cache.
    support.until(lambda: refused("--dry-run=server"), "the plan policy seeing plan free")
    assert refused()
    gone = kube.kubectl(
        "get", "integrationsettings", "image-generation", "-n", account, check=False
    )
    assert "NotFound" in gone.stderr


def test_restart_converges_on_changes_made_while_down(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    kube = installed
    second = f"{account}-new"
    kube.kubectl("create", "namespace", second)
    assert operator.stop() == 0, operator.log_tail()  # SIGTERM: a graceful exit
    try:
        support.apply_text(kube, support.override_manifest(account, "openai", {"model": "gpt-4.1"}))
        support.apply_text(kube, support.account_manifest(second, second))
        fixtures.apply_keys(kube, {**fixtures.KEYS, "openai": "sk-rotated-while-down"})
        kube.kubectl("delete", *cm_args(account))
        operator.start()
        wait_json(kube, cm_args(account), lambda cm: settings(cm, "openai")["model"] == "gpt-4.1")
        wait_json(kube, cm_args(second), lambda cm: settings(cm, "openai")["using_global"])
        for ns in (account, second):
            wait_json(
                kube,
                secret_args(ns),
                lambda s: base64.b64decode(s["data"]["openai.apiKey"]) == b"sk-rotated-while-down",
            )
    finally:
        if operator.proc is None:
            operator.start()
        fixtures.apply_keys(kube, fixtures.KEYS)
        kube.kubectl("delete", "account", second, "--ignore-not-found", "--wait=false")
        kube.kubectl("delete", "namespace", second, "--ignore-not-found", "--wait=false")


def test_the_operator_leaves_no_finalizers_or_kopf_annotations(
    installed: Kube, account: str
) -> None:
    for args in (
        ("accounts",),
        ("globalintegrationsettings",),
        ("integrationsettings", "-A"),
        ("configmaps", "-A", "-l", "app.kubernetes.io/managed-by=settings-controller"),
        ("secrets", "-A", "-l", "app.kubernetes.io/managed-by=settings-controller"),
    ):
        for item in support.get_json(installed, *args)["items"]:
            meta = item["metadata"]
            assert not meta.get("finalizers"), (args, meta["name"])
            assert not [
                k for k in meta.get("annotations", {}) if "kopf" in k or "last-handled" in k
            ]


@pytest.mark.parametrize(
    ("verb", "what", "allowed"),
    [
        pytest.param("list", ("secrets", "--all-namespaces"), "no", id="list-all-secrets"),
        pytest.param("get", ("secrets/anything", "-n", "default"), "no", id="other-secret"),
        pytest.param("get", ("configmaps/kube-root-ca.crt", "-n", "default"), "no", id="other-cm"),
        pytest.param("update", ("accounts",), "no", id="account-spec"),
        pytest.param("delete", ("integrationsettings", "-A"), "no", id="delete-overrides"),
        pytest.param("create", ("pods", "-n", "default"), "no", id="pods"),
        pytest.param(
            "list", ("secrets", "-n", support.OPERATOR_NAMESPACE), "yes", id="platform-keys"
        ),
        pytest.param("patch", ("accounts", "--subresource=status"), "yes", id="status"),
        pytest.param(
            "patch", ("secrets/integration-credentials", "-n", "default"), "yes", id="credentials"
        ),
    ],
)
def test_operator_rbac_is_least_privilege(
    installed: Kube, verb: str, what: tuple[str, ...], allowed: str
) -> None:
    proc = installed.kubectl(
        "auth", "can-i", verb, *what, kubeconfig=installed.operator_kubeconfig, check=False
    )
    assert proc.stdout.strip() == allowed, proc.stderr


def test_metrics_and_liveness(operator: support.Operator, account: str) -> None:
    assert operator.healthy()
    text = operator.metrics()
    for name in (
        "settings_controller_reconciles_total",
        "settings_controller_reconcile_duration_seconds_count",
        "settings_controller_writes_total",
        "settings_controller_fanout_accounts_count",
        "settings_controller_errors_total",
    ):
        assert name in text
    assert 'settings_controller_writes_total{kind="ConfigMap"}' in text


def test_logs_are_json(operator: support.Operator, account: str) -> None:
    lines = [line for line in operator.log_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"message", "severity", "timestamp"} <= set(record)


def test_an_account_recreated_after_its_namespace_was_deleted(
    installed: Kube, account: str
) -> None:
    kube = installed
    kube.kubectl("delete", "account", account)
    kube.kubectl("delete", "namespace", account, "--wait=false")
    wait_gone(kube, ("namespace", account), timeout=90)
    support.apply_text(kube, support.account_manifest(account, account))
    wait_json(
        kube,
        ("namespace", account),
        lambda ns: ns["metadata"]["labels"][f"{GROUP}/plan"] == "pro",
        what="the namespace created again",
    )
    cm = wait_json(kube, cm_args(account), lambda cm: True, timeout=60)
    assert settings(cm, "openai")["using_global"] is True


def _metric(operator: support.Operator, name: str) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_unchanged_result_is_not_rewritten(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    cm = support.get_json(installed, *cm_args(account))
    writes = _metric(operator, "settings_controller_writes_total")
    reconciles = _metric(operator, "settings_controller_reconciles_total")
    # An event that changes nothing the output depends on but is a reason to look
    # again: an annotation under the operator's own prefix (where its requests live).
    installed.kubectl("annotate", "account", account, f"{support.GROUP}/touched=yes")
    support.until(
        lambda: _metric(operator, "settings_controller_reconciles_total") > reconciles,
        "the account reconciled again",
    )
    # A label changes no declaration: the event is not even a reconcile.
    reconciles = _metric(operator, "settings_controller_reconciles_total")
    installed.kubectl("label", "account", account, "touched=yes")
    installed.kubectl("wait", "--for=jsonpath={.metadata.labels.touched}=yes", "account", account)
    time.sleep(1)  # the watch event has long arrived; a reconcile would have counted
    assert _metric(operator, "settings_controller_reconciles_total") == reconciles
    assert _metric(operator, "settings_controller_writes_total") == writes
    again = support.get_json(installed, *cm_args(account))
    assert again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
