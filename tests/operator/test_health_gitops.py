"""The README's GitOps section: the shipped Argo CD Applications, Flux
Kustomizations and declarations, and the apply order they encode.

Argo CD and Flux are not installed on the local control plane, so their
objects are checked structurally (every path they name exists and builds, the
order is the documented one); the declarations are applied for real, in that
order, and judged by kstatus as Flux's ``wait`` judges them.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import CLI
from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.test_health import CURRENT, wait_verdicts

GITOPS = support.REPO / "deploy" / "gitops"
DECLARATIONS = GITOPS / "declarations"
WAVE = "argocd.argoproj.io/sync-wave"


def _docs(path: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _declared() -> list[dict[str, Any]]:
    return [d for p in sorted(DECLARATIONS.rglob("*.yaml")) for d in _docs(p)]


def _readme_validate_commands() -> list[list[str]]:
    """The `settings-controller validate` lines of the README's GitOps section, exactly."""
    text = (support.REPO / "README.md").read_text()
    section = text[text.index("## GitOps") :]
    return [
        shlex.split(line)
        for line in section.splitlines()
        if line.startswith("settings-controller validate ")
    ]


def test_validate_is_the_pre_merge_check() -> None:
    """`settings-controller validate deploy/gitops/declarations`, as CI runs it, and the
    tenants' repository checked against the platform's."""
    commands = _readme_validate_commands()
    assert [c[2:] for c in commands] == [
        ["deploy/gitops/declarations"],
        ["deploy/gitops/declarations/tenants", "--global", "deploy/gitops/declarations/platform"],
    ]
    for command, files in zip(commands, ("3 files checked", "3 files checked"), strict=True):
        proc = subprocess.run(
            [str(CLI), *command[1:]],
            cwd=support.REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"{files}, 0 errors" in proc.stderr and proc.stdout == "", proc.stdout


def test_the_gitops_global_is_the_example_global() -> None:
    (mine,) = _docs(DECLARATIONS / "platform" / "global.yaml")
    (example,) = _docs(support.REPO / "examples" / "global.yaml")
    assert mine["spec"] == example["spec"]


def test_argo_waves_put_platform_objects_first() -> None:
    for doc in _declared():
        wave = doc["metadata"].get("annotations", {}).get(WAVE)
        if doc["kind"] == "IntegrationSettings":
            assert wave is None, doc["metadata"]  # wave 0
        else:
            assert wave == "-1", doc["metadata"]


def test_argocd_applications_name_real_paths() -> None:
    apps = {d["metadata"]["name"]: d for d in _docs(GITOPS / "argocd" / "applications.yaml")}
    assert set(apps) == {"settings-controller", "settings-declarations"}
    assert apps["settings-controller"]["spec"]["source"]["path"] == "deploy"
    declarations = apps["settings-declarations"]["spec"]
    assert declarations["source"]["path"] == "deploy/gitops/declarations"
    assert declarations["source"]["directory"] == {"recurse": True}
    assert "SkipDryRunOnMissingResource=true" in declarations["syncPolicy"]["syncOptions"]
    for app in apps.values():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        assert (support.REPO / app["spec"]["source"]["path"]).is_dir()


def test_flux_kustomizations_depend_in_order() -> None:
    docs = _docs(GITOPS / "flux" / "kustomizations.yaml")
    (repo,) = [d for d in docs if d["kind"] == "GitRepository"]
    kustomizations = {
        d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Kustomization"
    }
    order = ["settings-controller", "settings-platform", "settings-tenants"]
    assert list(kustomizations) == order
    for before, after in itertools.pairwise(order):
        assert kustomizations[after]["dependsOn"] == [{"name": before}]
    for spec in kustomizations.values():
        assert spec["wait"] is True  # health-checked with kstatus before dependants start
        assert spec["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
        assert (support.REPO / spec["path"]).is_dir()
    assert kustomizations["settings-controller"]["path"] == "./deploy"


def readme_commands() -> list[list[str]]:
    """The "By hand" commands of the README's GitOps section."""
    text = (support.REPO / "README.md").read_text()
    block = text.split("By hand:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


@pytest.mark.cluster
def test_apply_order_on_the_control_plane(installed: Kube, operator: support.Operator) -> None:
    """Tenant objects before their Account are refused; the README's commands, in its
    order, end with every object Current."""
    kube = installed
    tenants = str(DECLARATIONS / "tenants")
    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["kubectl", "apply"],
        ["kubectl", "wait"],
        ["kubectl", "apply"],
    ]
    try:
        early = kube.kubectl("apply", "--dry-run=server", "-f", tenants, check=False)
        assert early.returncode != 0 and 'namespaces "acct-gitops" not found' in early.stderr
        for command in commands:
            kube.kubectl(
                *(str(support.REPO / a) if a.startswith("deploy/") else a for a in command[1:])
            )
        wait_verdicts(kube, ("account", "acct-gitops"), CURRENT)
        override = wait_verdicts(
            kube, ("integrationsettings", "openai", "-n", "acct-gitops"), CURRENT
        )
        assert override["status"]["appliedFields"] == ["model", "temperature"]
    finally:
        kube.kubectl("delete", "-f", tenants, "--ignore-not-found", "--wait=false")
        kube.kubectl("delete", "account", "acct-gitops", "--ignore-not-found", "--wait=false")
        kube.kubectl("delete", "namespace", "acct-gitops", "--ignore-not-found", "--wait=false")
