"""deploy/: what an ops team installs with ``kubectl apply -k deploy/``."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.harness.fixtures import Kube
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
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8080,
        "metrics": 8443,
    }
    assert "--metrics-bind-address=:8443" in container["args"]
    assert "--leader-elect" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    images = yaml.safe_load((DEPLOY / "manager" / "kustomization.yaml").read_text())["images"]
    assert images[0]["name"] == container["image"].split(":")[0]


def test_metrics_are_guarded_by_rbac_and_a_network_policy() -> None:
    """kubebuilder's scaffold: the operator may review tokens and access; a reader role for
    the scraper; ingress to 8443 only from namespaces labelled metrics=enabled; the
    ServiceMonitor scrapes https with its ServiceAccount token."""
    auth, binding = _docs("rbac/metrics_auth_role.yaml")
    assert {(r["apiGroups"][0], r["resources"][0], tuple(r["verbs"])) for r in auth["rules"]} == {
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    }
    assert binding["roleRef"]["name"] == auth["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "settings-controller",
            "namespace": support.OPERATOR_NAMESPACE,
        }
    ]
    (reader,) = _docs("rbac/metrics_reader_role.yaml")
    assert reader["metadata"]["name"] == "settings-controller-metrics-reader"
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    (policy,) = _docs("network-policy/allow-metrics-traffic.yaml")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}]
    assert rule["ports"] == [{"port": 8443, "protocol": "TCP"}]
    deployment = next(d for d in _docs("manager/manager.yaml") if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Optional, as kubebuilder's config/network-policy: `kubectl apply -k deploy/network-policy/`
    # (or the chart's networkPolicy.enabled), since it takes effect only where the network
    # plugin enforces NetworkPolicies and must name the namespace Prometheus runs in.
    assert (
        "network-policy"
        not in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    )
    (monitor,) = _docs("prometheus/monitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["bearerTokenFile"].endswith("/token")


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
