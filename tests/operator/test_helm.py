"""The Helm chart and deploy/install.yaml, with the real ``helm`` (built from Go modules,
tests/cluster/helm) and the harness's kubectl: generated from ``kubectl kustomize deploy/``
without drift, the same objects with default values, the values doing what they say,
``helm lint``, and ``helm install`` / ``upgrade`` / ``uninstall`` on a control plane."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster import controlplane
from tests.cluster.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

DEPLOY = support.REPO / "deploy"
CHART = DEPLOY / "chart" / "settings-controller"
GENERATOR = DEPLOY / "chart" / "generate.py"


@pytest.fixture(scope="module")
def helm(kube: Kube) -> pathlib.Path:
    """.cluster/bin/helm, next to the harness (the build is cached after the first)."""
    return controlplane.build_helm(
        controlplane.Paths(pathlib.Path(kube.kubectl_path).parent.parent)
    )


def _run(*args: str | pathlib.Path, input: str | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, input=input, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _objects(stream: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    found = {}
    for obj in yaml.safe_load_all(stream):
        if obj:
            meta = obj["metadata"]
            found[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return found


def _kustomize(kube: Kube) -> str:
    return kube.kubectl("kustomize", str(DEPLOY)).stdout


def _template(helm: pathlib.Path, *args: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    return _objects(_run(helm, "template", "settings-controller", CHART, "--include-crds", *args))


def test_generated_files_are_current(kube: Kube) -> None:
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        input=_kustomize(kube),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, f"run `make manifests`:\n{check.stdout}{check.stderr}"


def test_install_yaml_and_chart_are_the_kustomize_objects(kube: Kube, helm: pathlib.Path) -> None:
    expected = _objects(_kustomize(kube))
    assert _objects((DEPLOY / "install.yaml").read_text()) == expected
    rendered = _template(helm)
    assert sorted(rendered) == sorted(expected)
    for key, obj in expected.items():
        assert rendered[key] == obj, key


def test_values(helm: pathlib.Path) -> None:
    rendered = _template(
        helm,
        "--set=image.repository=registry.example/sc",
        "--set=image.tag=1.2.3",
        "--set=replicaCount=2",
        "--set=resources.limits.memory=1Gi",
        "--set=extraLabels.team=platform",
        "--set=tenantRole.enabled=false",
        "--set=metrics.serviceMonitor.enabled=true",
    )
    deployment = rendered[("Deployment", "settings-controller-system", "settings-controller")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/sc:1.2.3"
    assert deployment["spec"]["replicas"] == 2
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    # Every templated object; crds/ is never templated by Helm, so the CRDs keep theirs.
    labelled = {k: o["metadata"]["labels"].get("team") for k, o in rendered.items()}
    assert {k for k, team in labelled.items() if team != "platform"} == {
        k for k in rendered if k[0] == "CustomResourceDefinition"
    }
    assert ("ClusterRole", "", "settings-controller-tenant") not in rendered
    monitor = rendered[("ServiceMonitor", "settings-controller-system", "settings-controller")]
    service = rendered[("Service", "settings-controller-system", "settings-controller-metrics")]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]

    off = _template(
        helm, "--set=metrics.enabled=false", "--set=metrics.serviceMonitor.enabled=true"
    )
    assert not {k for k in off if k[0] in ("Service", "ServiceMonitor")}
    assert ("Namespace", "", "settings-controller-system") not in _template(
        helm, "--set=createNamespace=false"
    )


def test_helm_lint(helm: pathlib.Path) -> None:
    out = _run(helm, "lint", CHART, "--strict")
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.fixture(scope="module")
def own_cluster(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A second control plane: helm owns every object it installs, so not the session's."""
    root = tmp_path_factory.mktemp("helm-cluster")
    paths = controlplane.Paths(root)
    paths.bin.mkdir(parents=True)
    built = pathlib.Path(os.path.realpath(kube.kubectl_path))
    shutil.copy2(built, paths.harness)
    paths.kubectl.symlink_to(paths.harness.name)
    info = controlplane.up(paths, rebuild=False)
    try:
        yield info.kubeconfig
    finally:
        controlplane.down(paths)


def test_helm_install_upgrade_uninstall(
    helm: pathlib.Path, kube: Kube, own_cluster: pathlib.Path
) -> None:
    kubectl = pathlib.Path(kube.kubectl_path)
    config = f"--kubeconfig={own_cluster}"
    out = _run(helm, "install", "settings-controller", CHART, config, "--namespace=default")
    assert "STATUS: deployed" in out
    names = set(
        _run(kubectl, config, "get", "crd,clusterrole,deployment", "-A", "-o", "name").split()
    )
    assert {
        "deployment.apps/settings-controller",
        "clusterrole.rbac.authorization.k8s.io/settings-controller-tenant",
        "customresourcedefinition.apiextensions.k8s.io/accounts.integrations.igny8.com",
    } <= names

    _run(
        helm,
        "upgrade",
        "settings-controller",
        CHART,
        config,
        "--namespace=default",
        "--set=tenantRole.enabled=false",
        "--set=replicaCount=1",
    )
    gone = subprocess.run(
        [kubectl, config, "get", "clusterrole", "settings-controller-tenant"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr

    _run(helm, "uninstall", "settings-controller", config, "--namespace=default")
    left = _run(kubectl, config, "get", "deployment,clusterrole", "-A", "-o", "name")
    assert "settings-controller" not in left
    # CRDs stay, as Helm does with crds/: deleting them would delete every declaration.
    assert "accounts.integrations.igny8.com" in _run(kubectl, config, "get", "crd", "-o", "name")
