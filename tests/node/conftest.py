"""Fixtures for the end-to-end tests on a real node (tests/harness/node.py).

``node`` (session): the ``kube`` control plane with a node added (kubelet,
containerd, pod network, kube-scheduler); stopped at the end if this session
added it. ``deployed_operator`` (package): the operator image built from
deploy/Dockerfile, loaded into the node, deploy/ applied through
tests/harness/overlay, the Deployment Available, the platform key Secret and
examples/ applied. Missing prerequisites skip on a developer machine and fail
under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import controlplane as cp
from tests.harness import image as image_
from tests.harness import node as node_
from tests.harness.fixtures import Kube, unavailable, until

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "settings-controller-system"
DEPLOYMENT = "settings-controller"
SELECTOR = "app.kubernetes.io/name=settings-controller,app.kubernetes.io/component=operator"
# Test values only; compared, never printed.
PLATFORM_KEYS = {"openai": "test-openai-key-1", "dalle": "test-dalle-key", "runware": "test-rw"}
ACCOUNT_NAMESPACES = ("acct-123", "acct-456", "acct-789", "acct-free", "acct-paused")
NODE_TOOLS = ("buildah", "mmdebstrap", "runc", "socat", "dnsmasq", "ip", "iptables")
# Seconds between two looks of until(): most are kubectl calls.
POLL = 0.5


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


@dataclass
class Node:
    kube: Kube
    paths: node_.NodePaths

    def get(self, *args: str) -> Any:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json").stdout)

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.get("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def running_operator_pod(self) -> dict[str, Any] | None:
        """The one operator pod if it is Running and Ready, else None."""
        pods = self.operator_pods()
        if len(pods) != 1 or pods[0]["status"].get("phase") != "Running":
            return None
        ready = [c for c in pods[0]["status"].get("conditions", []) if c["type"] == "Ready"]
        return pods[0] if ready and ready[0]["status"] == "True" else None

    def lease_holder(self) -> str:
        lease = self.get("lease", "-n", NAMESPACE, DEPLOYMENT)
        return str(lease["spec"].get("holderIdentity") or "")

    def exec(self, namespace: str, pod: str, *cmd: str) -> str:
        return self.kube.kubectl("exec", "-n", namespace, pod, "--", *cmd, timeout=30).stdout


def _prerequisites() -> None:
    if os.geteuid() != 0:
        unavailable("the node tests need root (kubelet, containerd, network namespaces)")
    missing = [t for t in NODE_TOOLS if shutil.which(t) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not found: `make node-deps` installs them")
    if cp.go_binary() is None:
        unavailable("go not found: the node is built from Go modules")


# Package scope: the node and the in-cluster operator are gone before other
# packages' tests (tests/operator runs its own operator process) begin.
@pytest.fixture(scope="package")
def node(kube: Kube) -> Iterator[Node]:
    _prerequisites()
    paths = cp.Paths()
    if kube.kubeconfig.resolve() != paths.kubeconfig.resolve():
        unavailable("the node tests need this tree's control plane, not $KUBECONFIG's")
    added = not cp.node_running(paths)
    try:
        cp.up(paths, rebuild=True, with_node=True)
    except (cp.ControlPlaneError, node_.NodeError) as e:
        pytest.fail(f"the node did not start: {e}", pytrace=False)
    kube.log_paths.extend(p for p in node_.NodePaths(paths.root).logs if p not in kube.log_paths)
    try:
        yield Node(kube, node_.NodePaths(paths.root))
    finally:
        if added:
            node_.stop(node_.NodePaths(paths.root), paths.kubectl, paths.kubeconfig)


def _apply_examples(kube: Kube) -> bool:
    proc = kube.kubectl("apply", "-R", "-f", str(REPO / "examples"), check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    return all("plan free may not override" in line for line in errors)


# What a session's earlier tests may have installed (tests.operator.fixtures.install: the
# global and the key Secret, once per session) and the node tests overwrite: kept before,
# put back after, so tests that run later find the control plane as it was.
_KEPT = (("globalintegrationsettings", "default"), ("secret", "platform-api-keys", "-n", NAMESPACE))


def _keep(kube: Kube) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    kept = []
    for args in _KEPT:
        proc = kube.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode == 0:
            obj = json.loads(proc.stdout)
            meta = obj["metadata"]
            obj["metadata"] = {
                k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
            }
            obj.pop("status", None)
            kept.append((obj, args))
    return kept


def _put_back(kube: Kube, kept: list[tuple[dict[str, Any], tuple[str, ...]]]) -> None:
    for obj, args in kept:
        # Deleted with examples/ a moment ago, or edited: created again as it was kept (a
        # custom resource cannot be replaced without a resourceVersion).
        kube.kubectl("delete", *args, "--ignore-not-found", "--wait=true", "--timeout=60s")
        body = json.dumps(obj)
        until(
            lambda body=body: (
                kube.kubectl("create", "-f", "-", input=body, check=False).returncode == 0
            ),
            f"{obj['kind']} {obj['metadata']['name']} created again",
            60,
            POLL,
        )


@pytest.fixture(scope="package")
def deployed_operator(node: Node) -> Iterator[Node]:
    """The operator running as a pod on the node, examples/ applied."""
    kept = _keep(node.kube)
    archive = image_.build()
    node_.import_image(node.paths, archive)
    kube = node.kube
    kube.kubectl("apply", "-k", str(REPO / "tests/harness/overlay"))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "platform-api-keys", "namespace": NAMESPACE},
        "stringData": PLATFORM_KEYS,
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(secret))
    kube.kubectl(
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Available",
        f"deployment/{DEPLOYMENT}",
        "--timeout=300s",
        timeout=320,
    )
    # The IntegrationSettings go into namespaces the operator creates for
    # their Accounts: the first apply may find them missing, as a user's would.
    # acct-free's override is refused by the plan policy, as examples/README.md says.
    until(lambda: _apply_examples(kube), "kubectl apply -R -f examples/", 90, 2)
    yield node
    # Leave the control plane as the other tests expect it: no examples, no
    # operator Deployment (deleted with its grace period, so the Lease is
    # released), no account namespaces.
    kube.kubectl("delete", "-R", "-f", str(REPO / "examples"), "--ignore-not-found", check=False)
    kube.kubectl(
        "delete",
        "deployment",
        DEPLOYMENT,
        "-n",
        NAMESPACE,
        "--ignore-not-found",
        "--timeout=60s",
        check=False,
        timeout=90,
    )
    # Waited for while the kubelet still runs: a namespace whose pods are on a
    # stopped node stays Terminating, and every later test that reuses the
    # examples' namespaces would wait for it in vain.
    kube.kubectl(
        "delete",
        "namespace",
        *ACCOUNT_NAMESPACES,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=150s",
        check=False,
        timeout=180,
    )
    _put_back(kube, kept)
