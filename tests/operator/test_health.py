"""What GitOps tools conclude from our statuses, asked of the real judges.

Each case puts real objects on the local control plane, with the operator
running (or stopped), and hands ``kubectl get -o json`` of them to kstatus's
``Compute`` (sigs.k8s.io/cli-utils, what Flux's health checks use) and to the
Argo CD health check shipped in deploy/argocd/health.lua, run in gopher-lua
(the interpreter Argo CD embeds). Both are subcommands of the test harness
binary (tests/harness/health.go). Expected verdicts, as the README documents:

| case | kstatus | Argo CD |
| --- | --- | --- |
| good override (and its Account, the global) | Current | Healthy |
| bad override stored on a cluster without the admission policies | Failed | Degraded |
| a referenced platform key missing (global, Account) | InProgress | Progressing |
| no global (Account, its override) | InProgress | Progressing |
| two Accounts claiming one namespace | Failed | Degraded |
| spec changed while the operator is down | InProgress | Progressing |
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.harness.fixtures import Kube
from tests.operator import fixtures, support
from tests.operator.support import condition, settings, wait_json

pytestmark = pytest.mark.cluster

HEALTH_LUA = support.REPO / "deploy" / "argocd" / "health.lua"
KINDS = ("GlobalIntegrationSettings", "Account", "IntegrationSettings")

Verdicts = tuple[str, str]  # (kstatus, Argo CD)


def _judge(kube: Kube, body: str, *args: str) -> dict[str, str]:
    harness = pathlib.Path(os.path.realpath(kube.kubectl_path))
    proc = subprocess.run(
        [str(harness), *args], input=body, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def flux_exprs() -> dict[str, str]:
    """The README's Flux ``healthCheckExprs`` entry (the yaml block that holds it)."""
    text = (support.REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "healthCheckExprs" in b)
    (entry,) = yaml.safe_load(block)["healthCheckExprs"]
    return {k: entry[k] for k in ("inProgress", "failed", "current")}


def judged(kube: Kube, obj: support.Json) -> tuple[dict[str, str], dict[str, str]]:
    """kstatus's and Argo CD's verdicts; Flux's CEL equivalent must agree with kstatus."""
    body = json.dumps(obj)
    kstatus = _judge(kube, body, "kstatus")
    exprs = flux_exprs()
    flux = _judge(kube, body, "flux-cel", exprs["inProgress"], exprs["failed"], exprs["current"])
    assert flux["status"] == kstatus["status"], (flux, kstatus)
    return kstatus, _judge(kube, body, "lua", str(HEALTH_LUA))


def wait_verdicts(kube: Kube, args: tuple[str, ...], expected: Verdicts) -> support.Json:
    """The object once both judges give ``expected``; fails with what they said last."""
    last: list[object] = []

    def ok(obj: support.Json) -> bool:
        kstatus, argo = judged(kube, obj)
        last[:] = [kstatus, argo, obj.get("status")]
        return (kstatus["status"], argo["status"]) == expected

    try:
        return wait_json(kube, args, ok, timeout=40, what=f"{args} judged {expected}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast verdicts: {last}") from None


CURRENT: Verdicts = ("Current", "Healthy")
FAILED: Verdicts = ("Failed", "Degraded")
IN_PROGRESS: Verdicts = ("InProgress", "Progressing")

GLOBAL = ("globalintegrationsettings", "default")


@pytest.fixture
def account(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[str]:
    """An Account with a good override, rendered."""
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    support.apply_text(
        installed, support.override_manifest(tenant_ns, "openai", {"model": "gpt-4o"})
    )
    wait_json(
        installed,
        ("configmap", "integration-settings", "-n", tenant_ns),
        lambda cm: settings(cm, "openai")["model"] == "gpt-4o",
    )
    yield tenant_ns
    installed.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


def test_good_override_is_current_and_healthy(installed: Kube, account: str) -> None:
    override = wait_verdicts(installed, ("integrationsettings", "openai", "-n", account), CURRENT)
    for type_ in ("Ready", "Reconciling", "Stalled"):
        assert support.is_current(override, type_), type_
    assert condition(override, "Reconciling")["status"] == "False"
    assert condition(override, "Stalled")["status"] == "False"
    wait_verdicts(installed, ("account", account), CURRENT)
    wait_verdicts(installed, GLOBAL, CURRENT)
    # The tenant's choices reach the ConfigMap it may read, as in file mode.
    cm = support.get_json(installed, "configmap", "integration-settings", "-n", account)
    choices = settings(cm, "openai")["choices"]
    assert choices["overrides_allowed"] is True
    assert choices["fields"]["model"]["enum"] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
    assert (
        choices["fields"]["temperature"]["minimum"],
        choices["fields"]["temperature"]["maximum"],
    ) == (0, 2)


def test_bad_override_without_the_policies_fails(installed: Kube, account: str) -> None:
    """Admission would refuse it; a cluster without the policy bindings stores it,
    and the operator's Stalled condition turns the sync red."""
    kube = installed
    kube.kubectl(
        "delete",
        "validatingadmissionpolicybinding",
        "-l",
        "app.kubernetes.io/name=settings-controller",
    )
    try:
        bad = support.override_manifest(account, "openai", {"model": "gpt-4o", "temperature": 5})
        # The API server's policy cache keeps refusing for a moment after the deletion.
        support.until(
            lambda: support.apply_text(kube, bad, check=False).returncode == 0,
            "the bad override stored without the policies",
            60,
        )
        args = ("integrationsettings", "openai", "-n", account)
        override = wait_verdicts(kube, args, FAILED)
        stalled = condition(override, "Stalled")
        assert stalled["status"] == "True"
        assert stalled["reason"] == "ValueRejected"
        assert "temperature" in stalled["message"]
        kstatus, argo = judged(kube, override)
        assert "temperature" in kstatus["message"]
        assert argo["message"].startswith("ValueRejected: ")
        # Fixing the spec is what clears it.
        support.apply_text(kube, support.override_manifest(account, "openai", {"model": "gpt-4o"}))
        wait_verdicts(kube, args, CURRENT)
    finally:
        kube.kubectl(
            "apply",
            "-k",
            str(support.REPO / "deploy"),
            "--server-side",
            "--force-conflicts",
        )


def test_missing_key_is_in_progress_and_named(installed: Kube, account: str) -> None:
    kube = installed
    fixtures.apply_keys(kube, {k: v for k, v in fixtures.KEYS.items() if k != "dalle"})
    try:
        glob = wait_verdicts(kube, GLOBAL, IN_PROGRESS)
        assert condition(glob)["reason"] == "KeysMissing"
        assert condition(glob, "Reconciling")["status"] == "True"
        assert "platform-api-keys/dalle" in condition(glob)["message"]
        acct = wait_verdicts(kube, ("account", account), IN_PROGRESS)
        message = condition(acct)["message"]
        assert condition(acct)["status"] == "False"
        assert "platform-api-keys/dalle (image_generation.dalle)" in message
        for value in fixtures.KEYS.values():
            assert value not in json.dumps(acct["status"])
            assert value not in json.dumps(glob["status"])
    finally:
        fixtures.apply_keys(kube, fixtures.KEYS)
    wait_verdicts(kube, GLOBAL, CURRENT)
    wait_verdicts(kube, ("account", account), CURRENT)


def test_no_global_is_in_progress(installed: Kube, account: str) -> None:
    kube = installed
    kube.kubectl("delete", *GLOBAL)
    try:
        acct = wait_verdicts(kube, ("account", account), IN_PROGRESS)
        assert condition(acct, "Reconciling")["reason"] == "NoGlobalSettings"
        wait_verdicts(kube, ("integrationsettings", "openai", "-n", account), IN_PROGRESS)
    finally:
        kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
    wait_verdicts(kube, ("account", account), CURRENT)
    wait_verdicts(kube, GLOBAL, CURRENT)


def test_namespace_conflict_fails(installed: Kube, account: str) -> None:
    kube = installed
    second = f"{account}-b"
    support.apply_text(kube, support.account_manifest(second, account))
    try:
        # The newcomer. (The first claimant is only re-rendered by the next
        # resync today: an Account event renders that Account alone, which
        # the work-queue refactoring of issue 11 takes on.)
        acct = wait_verdicts(kube, ("account", second), FAILED)
        assert condition(acct, "Stalled")["reason"] == "NamespaceConflict"
        assert condition(acct)["status"] == "False"
    finally:
        kube.kubectl("delete", "account", second, "--ignore-not-found")
    wait_verdicts(kube, ("account", account), CURRENT)


def test_spec_changed_while_the_operator_is_down_is_in_progress(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    kube = installed
    args = ("integrationsettings", "openai", "-n", account)
    wait_verdicts(kube, args, CURRENT)
    assert operator.stop() == 0, operator.log_tail()
    try:
        support.apply_text(kube, support.override_manifest(account, "openai", {"model": "gpt-4.1"}))
        kstatus, argo = judged(kube, support.get_json(kube, *args))
        assert (kstatus["status"], argo["status"]) == IN_PROGRESS
        assert "generation is 2, but latest observed generation is 1" in kstatus["message"]
        assert "observe generation 2" in argo["message"]
    finally:
        if operator.proc is None:
            operator.start()
    wait_verdicts(kube, args, CURRENT)


def test_argocd_config_carries_the_check_for_each_kind(installed: Kube) -> None:
    """deploy/argocd holds health.lua under one argocd-cm key per kind; the README's
    patch command adds them to a live argocd-cm and keeps its other keys."""
    kube = installed
    rendered = kube.kubectl("kustomize", str(support.REPO / "deploy" / "argocd")).stdout
    configmap = yaml.safe_load(rendered)
    script = HEALTH_LUA.read_text()
    assert configmap["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert configmap["data"] == {
        f"resource.customizations.health.integrations.igny8.com_{kind}": script for kind in KINDS
    }
    kube.kubectl("create", "namespace", "argocd", check=False)
    # As Argo CD's install manifests arrive: client-side apply.
    support.apply_text(
        kube,
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": "argocd"},
                "data": {"url": "https://argocd.example"},
            }
        ),
    )
    readme = (support.REPO / "README.md").read_text()
    (command,) = [
        line.strip() for line in readme.splitlines() if "patch configmap argocd-cm" in line
    ]
    env = {
        **os.environ,
        "PATH": f"{pathlib.Path(kube.kubectl_path).parent}:{os.environ['PATH']}",
        "KUBECONFIG": str(kube.kubeconfig),
    }
    for _ in range(2):  # and again: nothing changes
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=support.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        live = support.get_json(kube, "configmap", "argocd-cm", "-n", "argocd")
        assert live["data"] == {"url": "https://argocd.example", **configmap["data"]}


def test_explain_shows_each_kinds_status_and_get_shows_why(installed: Kube, account: str) -> None:
    kube = installed
    glob = kube.kubectl("explain", "globalintegrationsettings.status").stdout
    assert "conditions" in glob and "usingGlobal" not in glob and "appliedFields" not in glob
    assert "usingGlobal" in kube.kubectl("explain", "accounts.status").stdout
    assert "appliedFields" in kube.kubectl("explain", "integrationsettings.status").stdout
    wait_verdicts(kube, ("account", account), CURRENT)
    header, row = kube.kubectl("get", "account", account).stdout.splitlines()
    assert header.split()[-3:] == ["READY", "REASON", "AGE"]
    assert row.split()[-3:-1] == ["True", "Reconciled"]
    wide = kube.kubectl("get", "account", account, "-o", "wide").stdout
    assert "MESSAGE" in wide and f"effective settings written to {account}/" in wide
