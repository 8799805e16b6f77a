"""``render`` as GitOps tools run it: the Argo CD plugin's commands as Argo CD runs them (in
the Application's directory), and the kustomize exec generator through the harness's kubectl."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

GITOPS = support.REPO / "deploy" / "gitops"
ACCOUNTS = ["acct-123", "acct-456", "acct-789", "acct-free", "acct-paused"]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{support.CLI.parent}{os.pathsep}{os.environ['PATH']}"}


def _configmaps(stream: str) -> list[str]:
    docs = [d for d in yaml.safe_load_all(stream) if d]
    assert {d["kind"] for d in docs} == {"ConfigMap"}
    return sorted(d["metadata"]["namespace"] for d in docs)


def _sh(command: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def test_argocd_plugin(tmp_path: pathlib.Path) -> None:
    plugin = yaml.safe_load((GITOPS / "argocd-plugin.yaml").read_text())
    assert (plugin["apiVersion"], plugin["kind"]) == (
        "argoproj.io/v1alpha1",
        "ConfigManagementPlugin",
    )
    find, generate = (
        plugin["spec"]["discover"]["find"]["command"],
        plugin["spec"]["generate"]["command"],
    )
    app = tmp_path / "app"
    shutil.copytree(support.REPO / "examples", app)
    assert _sh(find, app).stdout.strip() == "./global.yaml"
    assert _sh(find, support.REPO / "deploy" / "crd").stdout.strip() == ""  # not ours
    done = _sh(generate, app)
    assert done.returncode == 0, done.stderr
    assert _configmaps(done.stdout) == ACCOUNTS
    # An error fails the sync (exit 1) and names the file; the other accounts still print.
    broken = app / "accounts" / "acct-789.yaml"
    broken.write_text(broken.read_text().replace("plan: pro", "plan: [pro"))
    failed = _sh(generate, app)
    assert failed.returncode == 1 and "acct-789.yaml" in failed.stderr
    assert _configmaps(failed.stdout) == [a for a in ACCOUNTS if a != "acct-789"]


def test_kustomize_exec_generator(kube: Kube) -> None:
    done = subprocess.run(
        [str(kube.kubectl_path), "kustomize", "--enable-alpha-plugins", str(GITOPS / "example")],
        env={**_env(), "XDG_CONFIG_HOME": str(GITOPS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _configmaps(done.stdout) == ACCOUNTS
    rendered = _sh([str(support.CLI), "render", "examples"], support.REPO).stdout
    by_ns = {d["metadata"]["namespace"]: d for d in yaml.safe_load_all(rendered) if d}
    for doc in yaml.safe_load_all(done.stdout):
        assert doc == by_ns[doc["metadata"]["namespace"]]
