"""The operator as users run it: the image from deploy/Dockerfile, deploy/
applied, a pod on a real node calling the API server in-cluster."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import pytest

from tests.harness import node as node_
from tests.harness.fixtures import until
from tests.node.conftest import DEPLOYMENT, NAMESPACE, POLL, Node, http_get
from tests.operator import support

pytestmark = pytest.mark.cluster


def _pod_answers(node: Node, pod: dict[str, Any]) -> tuple[int, str] | None:
    """/healthz and /readyz on 8080; /metrics over HTTPS on 8443 with a metrics-reader
    token (and 401 without one)."""
    ip = pod["status"]["podIP"]
    token = support.service_account_token(node.kube, support.SCRAPER, reader=True)
    try:
        status, _ = http_get(f"http://{ip}:8080/healthz")
        status_r, _ = http_get(f"http://{ip}:8080/readyz")
        refused, _ = support.fetch(f"https://{ip}:8443/metrics")
        status_m, metrics = support.fetch(f"https://{ip}:8443/metrics", token)
    except (urllib.error.URLError, OSError):
        return None
    answered = status == status_r == status_m == 200 and refused == 401
    return (status, metrics) if answered else None


def _leading(node: Node, pod: dict[str, Any]) -> bool:
    answered = _pod_answers(node, pod)
    return bool(
        answered
        and "settings_controller_leader 1.0" in answered[1]
        and node.lease_holder().startswith(pod["metadata"]["name"])
    )


def _account_model(node: Node, namespace: str) -> str | None:
    proc = node.kube.kubectl(
        "get", "configmap", "integration-settings", "-n", namespace, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout).get("data", {})
    return json.loads(data["openai.json"])["model"] if "openai.json" in data else None


def _running_pod(node: Node) -> dict[str, Any]:
    """The operator's pod once it is Running and Ready."""
    pod: dict[str, Any] = until(
        node.running_operator_pod, "a Running, Ready operator pod", 120, POLL, value=True
    )
    return pod


def test_the_deployment_runs_as_a_pod_that_leads_and_reconciles(deployed_operator: Node) -> None:
    pod = _running_pod(deployed_operator)
    assert pod["spec"]["nodeName"] == node_.NODE_NAME
    assert pod["spec"]["containers"][0]["image"] == "localhost/settings-controller:test"
    assert pod["status"]["podIP"].startswith("10.244.0.")
    # What the manifest asks for is what runs.
    container = pod["status"]["containerStatuses"][0]
    assert container["ready"] and container["restartCount"] == 0
    uid = deployed_operator.exec(
        NAMESPACE,
        pod["metadata"]["name"],
        "python3",
        "-c",
        "import os;print(os.getuid(), os.getgid())",
    )
    assert uid.split() == ["65532", "65532"]
    status = deployed_operator.exec(NAMESPACE, pod["metadata"]["name"], "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2", "RuntimeDefault seccomp filter not applied"
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    wrote = deployed_operator.kube.kubectl(
        "exec", "-n", NAMESPACE, pod["metadata"]["name"], "--", "touch", "/opt/venv/x", check=False
    )
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr

    # Liveness and metrics answer on the pod's own address; it holds the Lease.
    until(lambda: _leading(deployed_operator, pod), "the pod answering and leading", 60, POLL)
    # It reconciles examples/ (applied by the fixture) through the API server.
    assert (
        until(
            lambda: _account_model(deployed_operator, "acct-123"),
            "acct-123's settings",
            90,
            POLL,
            value=True,
        )
        == "gpt-4o"
    )
    model = until(
        lambda: _account_model(deployed_operator, "acct-789"),
        "acct-789's settings",
        30,
        POLL,
        value=True,
    )
    assert model == "gpt-4o-mini"


def test_its_serviceaccount_token_is_the_projected_bound_one(deployed_operator: Node) -> None:
    pod = _running_pod(deployed_operator)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    api_access = [v for n, v in volumes.items() if n.startswith("kube-api-access-")]
    assert len(api_access) == 1, volumes
    sources = api_access[0]["projected"]["sources"]
    token_source = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token_source["path"] == "token"
    # Decode the claims inside the pod (only the claims leave it, not the token).
    claims = json.loads(
        deployed_operator.exec(
            NAMESPACE,
            pod["metadata"]["name"],
            "python3",
            "-c",
            "import base64,json;t=open('/var/run/secrets/kubernetes.io/serviceaccount/token')"
            ".read().split('.')[1];print(base64.urlsafe_b64decode(t+'=='*2).decode())",
        )
    )
    assert claims["sub"] == f"system:serviceaccount:{NAMESPACE}:{DEPLOYMENT}"
    # Bound to this pod and the node, and short-lived (no one-year extension).
    assert claims["kubernetes.io"]["pod"]["name"] == pod["metadata"]["name"]
    assert claims["kubernetes.io"]["node"]["name"] == node_.NODE_NAME
    assert 0 < claims["exp"] - claims["iat"] <= 3607


def test_rollout_restart_and_a_deleted_pod_converge(deployed_operator: Node) -> None:
    first = _running_pod(deployed_operator)
    deployed_operator.kube.kubectl(
        "rollout", "restart", "-n", NAMESPACE, f"deployment/{DEPLOYMENT}"
    )
    deployed_operator.kube.kubectl(
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        f"deployment/{DEPLOYMENT}",
        "--timeout=180s",
        timeout=200,
    )

    def new_pod(old: str) -> dict[str, Any] | None:
        pod = deployed_operator.running_operator_pod()
        return pod if pod and pod["metadata"]["name"] != old else None

    second = until(
        lambda: new_pod(first["metadata"]["name"]), "the restarted pod", 120, POLL, value=True
    )
    until(lambda: _leading(deployed_operator, second), "the restarted pod leading", 60, POLL)

    deployed_operator.kube.kubectl(
        "delete", "pod", "-n", NAMESPACE, second["metadata"]["name"], "--wait=false"
    )
    third = until(
        lambda: new_pod(second["metadata"]["name"]), "the replacement pod", 120, POLL, value=True
    )
    until(lambda: _leading(deployed_operator, third), "the replacement pod leading", 60, POLL)
    assert len(deployed_operator.operator_pods()) == 1

    # The new leader acts: an override change reaches the account's ConfigMap.
    deployed_operator.kube.kubectl(
        "patch",
        "integrationsettings",
        "openai",
        "-n",
        "acct-456",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"overrides": {"model": "gpt-4o"}}}),
    )
    until(
        lambda: _account_model(deployed_operator, "acct-456") == "gpt-4o",
        "acct-456 re-rendered",
        60,
        POLL,
    )
    deployed_operator.kube.kubectl(
        "patch",
        "integrationsettings",
        "openai",
        "-n",
        "acct-456",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"overrides": {"model": "gpt-4.1"}}}),
    )
    until(
        lambda: _account_model(deployed_operator, "acct-456") == "gpt-4.1",
        "acct-456 restored",
        60,
        POLL,
    )
    # Nothing stale: the Lease names the live pod, no other operator pod left.
    assert deployed_operator.lease_holder().startswith(third["metadata"]["name"])
