"""A tenant edits its own overrides and reads its ConfigMap; nothing else."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import settings, wait_json

pytestmark = pytest.mark.cluster


@pytest.fixture
def tenancy(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[str]:
    """An account in ``tenant_ns`` whose admins (user ``tenant``) hold the tenant role there."""
    kube = installed
    support.apply_text(kube, support.account_manifest(tenant_ns, tenant_ns))
    kube.kubectl(
        "create",
        "rolebinding",
        "tenant-settings",
        "-n",
        tenant_ns,
        "--clusterrole=settings-controller-tenant",
        "--user=tenant",
    )
    wait_json(kube, ("secret", "integration-credentials", "-n", tenant_ns), lambda s: True)
    yield tenant_ns
    kube.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


def as_tenant(kube: Kube, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return kube.kubectl(*args, kubeconfig=kube.tenant_kubeconfig, input=input, check=False)


def test_tenant_edits_its_own_overrides(installed: Kube, tenancy: str) -> None:
    manifest = support.override_manifest(tenancy, "openai", {"model": "gpt-4.1"})
    proc = as_tenant(installed, "apply", "-f", "-", input=manifest)
    assert proc.returncode == 0, proc.stderr
    wait_json(
        installed,
        ("configmap", "integration-settings", "-n", tenancy),
        lambda cm: settings(cm, "openai")["model"] == "gpt-4.1",
    )
    mine = as_tenant(
        installed, "get", "configmap", "integration-settings", "-n", tenancy, "-o", "json"
    )
    assert mine.returncode == 0, mine.stderr
    assert settings(json.loads(mine.stdout), "openai")["model"] == "gpt-4.1"
    status = as_tenant(installed, "get", "integrationsettings", "openai", "-n", tenancy)
    assert status.returncode == 0 and "openai" in status.stdout
    deleted = as_tenant(installed, "delete", "integrationsettings", "openai", "-n", tenancy)
    assert deleted.returncode == 0, deleted.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("get", "secret", "integration-credentials"), id="credential-secret"),
        pytest.param(("get", "secrets"), id="list-secrets"),
        pytest.param(("get", "configmap", "kube-root-ca.crt"), id="other-configmap"),
        pytest.param(("get", "globalintegrationsettings", "default"), id="global"),
        pytest.param(("get", "accounts"), id="accounts"),
        pytest.param(
            ("create", "rolebinding", "x", "--clusterrole=admin", "--user=tenant"), id="escalate"
        ),
    ],
)
def test_tenant_cannot(installed: Kube, tenancy: str, args: tuple[str, ...]) -> None:
    namespaced = args[1] not in ("globalintegrationsettings", "accounts")
    proc = as_tenant(installed, *args, *(("-n", tenancy) if namespaced else ()))
    assert proc.returncode != 0
    assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr


def test_tenant_cannot_touch_another_tenant(installed: Kube, tenancy: str) -> None:
    other = f"{tenancy}-other"
    installed.kubectl("create", "namespace", other)
    support.apply_text(installed, support.account_manifest(other, other))
    try:
        wait_json(installed, ("configmap", "integration-settings", "-n", other), lambda cm: True)
        for args in (
            ("get", "integrationsettings", "-n", other),
            ("get", "configmap", "integration-settings", "-n", other),
        ):
            proc = as_tenant(installed, *args)
            assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), args
        manifest = support.override_manifest(other, "openai", {"model": "gpt-4o"})
        proc = as_tenant(installed, "apply", "-f", "-", input=manifest)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower()
    finally:
        installed.kubectl("delete", "account", other, "--ignore-not-found", "--wait=false")
        installed.kubectl("delete", "namespace", other, "--ignore-not-found", "--wait=false")
