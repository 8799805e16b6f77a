"""A workload pod consuming an account's outputs, as examples/workload.yaml.example
shows users: what it sees, and how long a change takes to reach its files."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.harness import controlplane as cp
from tests.harness.fixtures import until
from tests.node.conftest import NAMESPACE, PLATFORM_KEYS, POLL, REPO, Node

pytestmark = pytest.mark.cluster

ACCOUNT = "acct-789"
SETTINGS = "/etc/integration-settings/openai.json"
KEY = "/etc/integration-credentials/openai.apiKey"
# Where the measured figures go (README.md quotes them).
RESULTS = cp.cluster_dir() / "node-latency.json"


def _consumer_pod(node: Node) -> str | None:
    pods = node.get("pods", "-n", ACCOUNT, "-l", "app.kubernetes.io/name=settings-consumer")
    running = [
        p["metadata"]["name"]
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    return running[0] if len(running) == 1 else None


def _model_in_pod(node: Node, pod: str) -> str | None:
    proc = node.kube.kubectl("exec", "-n", ACCOUNT, pod, "--", "cat", SETTINGS, check=False)
    return json.loads(proc.stdout)["model"] if proc.returncode == 0 else None


def _key_digest_in_pod(node: Node, pod: str) -> str | None:
    # Only a digest leaves the pod: the test compares, never prints, a key.
    script = f"import hashlib;print(hashlib.sha256(open({KEY!r},'rb').read()).hexdigest())"
    proc = node.kube.kubectl("exec", "-n", ACCOUNT, pod, "--", "python3", "-c", script, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _configmap_model(node: Node) -> str | None:
    cm = node.kube.kubectl(
        "get", "configmap", "integration-settings", "-n", ACCOUNT, "-o", "json", check=False
    )
    if cm.returncode != 0:
        return None
    return str(json.loads(json.loads(cm.stdout)["data"]["openai.json"])["model"])


def _set_default_model(node: Node, model: str) -> None:
    patch = [{"op": "replace", "path": "/spec/integrations/openai/defaults/model", "value": model}]
    node.kube.kubectl("patch", "gis", "default", "--type=json", "-p", json.dumps(patch))


def _set_openai_key(node: Node, value: str) -> None:
    patch = {"stringData": {"openai": value}}
    node.kube.kubectl(
        "patch", "secret", "platform-api-keys", "-n", NAMESPACE, "-p", json.dumps(patch)
    )


def test_a_workload_sees_a_default_change_and_a_key_rotation_in_its_mounted_files(
    deployed_operator: Node,
) -> None:
    node = deployed_operator
    node.kube.kubectl("apply", "-f", str(REPO / "examples/workload.yaml.example"))
    pod = until(lambda: _consumer_pod(node), "the consumer pod Running", 120, POLL, value=True)
    assert (
        until(lambda: _model_in_pod(node, pod), "the settings file", 120, POLL, value=True)
        == "gpt-4o-mini"
    )
    want = hashlib.sha256(PLATFORM_KEYS["openai"].encode()).hexdigest()
    assert (
        until(lambda: _key_digest_in_pod(node, pod), "the key file", 60, POLL, value=True) == want
    )

    figures: dict[str, float] = {}
    try:
        # An admin changes a global default.
        started = time.monotonic()
        _set_default_model(node, "gpt-4.1")
        until(lambda: _configmap_model(node) == "gpt-4.1", "the ConfigMap", 60, 0.1)
        figures["default_change_configmap_s"] = time.monotonic() - started
        until(lambda: _model_in_pod(node, pod) == "gpt-4.1", "the pod's file", 180, 0.25)
        figures["default_change_in_pod_file_s"] = time.monotonic() - started

        # A platform key is rotated.
        started = time.monotonic()
        _set_openai_key(node, "test-openai-key-2")
        rotated = hashlib.sha256(b"test-openai-key-2").hexdigest()
        until(lambda: _key_digest_in_pod(node, pod) == rotated, "the rotated key file", 180, 0.25)
        figures["key_rotation_in_pod_file_s"] = time.monotonic() - started
    finally:
        _set_default_model(node, "gpt-4o-mini")
        _set_openai_key(node, PLATFORM_KEYS["openai"])
        node.kube.kubectl("delete", "deployment", "settings-consumer", "-n", ACCOUNT, check=False)

    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"workload-visible latencies: {figures}")
    # The kubelet's sync period (1 min) plus its object cache bounds what users wait.
    assert figures["default_change_in_pod_file_s"] < 150
    assert figures["key_rotation_in_pod_file_s"] < 150
