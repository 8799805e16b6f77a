"""deploy/: what an ops team installs with ``kubectl apply -k deploy/``."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.cluster.fixtures import Kube
from tests.operator import support

DEPLOY = support.REPO / "deploy"


def _docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / path).read_text()) if d]


def _all_deploy_docs() -> list[dict[str, Any]]:
    # deploy/chart holds Helm templates (YAML only once rendered), generated from the same
    # objects; tests/operator/test_helm.py checks them.
    chart = DEPLOY / "chart"
    return [
        d
        for p in sorted(DEPLOY.rglob("*.yaml"))
        if chart not in p.parents
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]


def test_samples_are_the_examples() -> None:
    examples = [
        d
        for p in sorted((support.REPO / "examples").rglob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    samples = [
        d
        for p in sorted((DEPLOY / "samples").glob("integrations_*.yaml"))
        for d in _docs(p.relative_to(DEPLOY).as_posix())
    ]
    assert {d["kind"] for d in samples} == {
        "GlobalIntegrationSettings",
        "Account",
        "IntegrationSettings",
    }
    for sample in samples:
        assert sample in examples, sample["metadata"]


def test_manager_runs_restricted() -> None:
    deployment = next(d for d in _docs("manager/manager.yaml") if d["kind"] == "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "settings-controller"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    images = yaml.safe_load((DEPLOY / "manager" / "kustomization.yaml").read_text())["images"]
    assert images[0]["name"] == container["image"].split(":")[0]


def test_rbac_has_no_wildcards() -> None:
    for doc in _all_deploy_docs():
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), (doc["metadata"]["name"], rule)


def test_tenant_role_never_reads_secrets() -> None:
    (role,) = _docs("rbac/tenant_role.yaml")
    assert not any("secrets" in r["resources"] for r in role["rules"])
    (configmaps,) = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert configmaps["resourceNames"] == ["integration-settings"]
    assert set(configmaps["verbs"]) <= {"get", "list", "watch"}


@pytest.mark.cluster
def test_kustomization_renders_into_one_namespace(kube: Kube) -> None:
    proc = kube.kubectl("kustomize", str(DEPLOY))
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    namespaced = [d for d in docs if "namespace" in d["metadata"]]
    assert namespaced and {d["metadata"]["namespace"] for d in namespaced} == {
        support.OPERATOR_NAMESPACE
    }
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
        "ValidatingAdmissionPolicy",
    } <= kinds


@pytest.mark.cluster
def test_admission_policies_type_check_against_the_crds(installed: Kube) -> None:
    generated = [
        d["metadata"]["name"]
        for d in yaml.safe_load_all((DEPLOY / "policy" / "generated.yaml").read_text())
        if d and d["kind"] == "ValidatingAdmissionPolicy"
    ]
    assert len(generated) == 7
    for name in (*generated, "settings-controller-plan-may-override"):
        policy = support.wait_json(
            installed,
            ("validatingadmissionpolicy", name),
            lambda p: p.get("status", {}).get("observedGeneration") == p["metadata"]["generation"],
        )
        assert not policy["status"].get("typeChecking", {}).get("expressionWarnings"), name


def test_dockerfile_runs_the_operator_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 65532" in text and 'CMD ["operator"]' in text


def test_crds_command_prints_three_crds() -> None:
    proc = subprocess.run(
        [str(support.CLI), "crds"], capture_output=True, text=True, timeout=60, check=True
    )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [d["spec"]["names"]["kind"] for d in docs] == [
        "GlobalIntegrationSettings",
        "Account",
        "IntegrationSettings",
    ]
