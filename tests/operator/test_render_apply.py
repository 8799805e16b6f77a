"""``settings-controller render examples | kubectl apply -f -`` against the real API server, and
``get --kubeconfig`` reading back what it applied: the same table as from the files."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

ACCOUNTS = ("acct-123", "acct-456", "acct-789", "acct-free", "acct-paused")
EXAMPLES = support.REPO / "examples"


def _pipe(kube: Kube, *render_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"'{support.CLI}' render {' '.join(render_args)} examples"
            f" | '{kube.kubectl_path}' --kubeconfig '{kube.kubeconfig}' apply -f -",
        ],
        cwd=support.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_render_pipes_into_kubectl_apply(kube: Kube) -> None:
    kube.kubectl("delete", "namespace", *ACCOUNTS, "--ignore-not-found", "--wait=true")
    try:
        with_namespaces = _pipe(kube, "--namespaces")
        assert with_namespaces.returncode == 0, with_namespaces.stderr
        assert "namespace/acct-123 created" in with_namespaces.stdout
        # The exact pipeline, now that the namespaces exist: same objects, nothing to change.
        again = _pipe(kube)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [
            f"configmap/integration-settings {verb}" for verb in ["unchanged"] * len(ACCOUNTS)
        ]
        cm = json.loads(
            kube.kubectl(
                "get", "configmap", "integration-settings", "-n", "acct-123", "-o", "json"
            ).stdout
        )
        assert json.loads(cm["data"]["openai.json"])["model"] == "gpt-4o"
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "settings-controller"
        # The Accounts too: `get --kubeconfig` shows the same table as from the files.
        kube.kubectl("apply", "-R", "-f", str(EXAMPLES), check=False)
        for args in (("acct-456", "openai"), ("acct-123",)):
            cluster = subprocess.run(
                [str(support.CLI), "get", *args, "--kubeconfig", str(kube.kubeconfig)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cluster.returncode == 0, cluster.stderr
            assert cluster.stderr == ""  # no HTTP request log lines around the table
            files = subprocess.run(
                [str(support.CLI), "get", *args, "-d", str(EXAMPLES)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            table, status = cluster.stdout.split("\nSTATUS\n")
            assert table == files.stdout
            assert status.startswith(f"  Account {args[0]}: ")
        missing = subprocess.run(
            [str(support.CLI), "get", "acct-nobody", "--kubeconfig", str(kube.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 1
        assert missing.stderr == "settings-controller: error: account 'acct-nobody' not found\n"
    finally:
        kube.kubectl("delete", "account", *ACCOUNTS, "--ignore-not-found", "--wait=false")
        kube.kubectl("delete", "namespace", *ACCOUNTS, "--ignore-not-found", "--wait=false")
