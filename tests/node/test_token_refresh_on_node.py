"""The operator keeps working across a ServiceAccount token refresh.

The Deployment's token is shortened to the shortest a projected token may ask
for (600 s): the kubelet rewrites it at 80% of its lifetime, and the test goes
on until the first token has expired, so every API client in the operator must
have picked up the new file. About 11 minutes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.harness.fixtures import until
from tests.node.conftest import DEPLOYMENT, NAMESPACE, POLL, Node

pytestmark = pytest.mark.cluster

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
EXPIRY = 600
CLAIMS = (
    "import base64,json;t=open('" + TOKEN_DIR + "/token').read().split('.')[1];"
    "c=json.loads(base64.urlsafe_b64decode(t+'=='));print(json.dumps([c['iat'],c['exp']]))"
)


def _short_token_patch() -> dict[str, Any]:
    sources = [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": EXPIRY}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {
            "downwardAPI": {
                "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
            }
        },
    ]
    return {
        "spec": {
            "template": {
                "spec": {
                    "automountServiceAccountToken": False,
                    "volumes": [{"name": "short-token", "projected": {"sources": sources}}],
                    "containers": [
                        {
                            "name": "operator",
                            "volumeMounts": [
                                {"name": "short-token", "mountPath": TOKEN_DIR, "readOnly": True}
                            ],
                        }
                    ],
                }
            }
        }
    }


def _claims(node: Node, pod: str) -> tuple[int, int] | None:
    proc = node.kube.kubectl(
        "exec", "-n", NAMESPACE, pod, "--", "python3", "-c", CLAIMS, check=False
    )
    if proc.returncode != 0:
        return None
    iat, exp = json.loads(proc.stdout)
    return int(iat), int(exp)


def _model(node: Node, namespace: str) -> str | None:
    proc = node.kube.kubectl(
        "get", "configmap", "integration-settings", "-n", namespace, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return None
    return str(json.loads(json.loads(proc.stdout)["data"]["openai.json"])["model"])


def test_the_operator_keeps_working_after_its_token_is_refreshed(deployed_operator: Node) -> None:
    node = deployed_operator
    node.kube.kubectl(
        "patch", "deployment", DEPLOYMENT, "-n", NAMESPACE, "-p", json.dumps(_short_token_patch())
    )
    node.kube.kubectl(
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        f"deployment/{DEPLOYMENT}",
        "--timeout=180s",
        timeout=200,
    )
    pod = until(node.running_operator_pod, "the new operator pod", 120, POLL, value=True)
    name = pod["metadata"]["name"]
    until(lambda: node.lease_holder().startswith(name), "the new pod leading", 60, POLL)
    first = until(lambda: _claims(node, name), "the token's claims", 30, POLL, value=True)
    assert first[1] - first[0] == EXPIRY

    # The kubelet refreshes it after 80% of its lifetime (480 s).
    refreshed = until(
        lambda: (c := _claims(node, name)) and c[0] > first[0] and c,
        "a refreshed token",
        720,
        5,
        value=True,
    )
    assert refreshed[1] - refreshed[0] == EXPIRY
    # Past the first token's expiry: only the new one is accepted now.
    time.sleep(max(0.0, first[1] + 5 - time.time()))

    for model in ("gpt-4o", "gpt-4.1"):
        node.kube.kubectl(
            "patch",
            "integrationsettings",
            "openai",
            "-n",
            "acct-456",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"overrides": {"model": model}}}),
        )
        until(
            lambda m=model: _model(node, "acct-456") == m,
            f"acct-456 rendered with {model}",
            60,
            POLL,
        )
    current = node.running_operator_pod()
    assert current is not None and current["metadata"]["name"] == name
    assert current["status"]["containerStatuses"][0]["restartCount"] == 0
    assert node.lease_holder().startswith(name)
