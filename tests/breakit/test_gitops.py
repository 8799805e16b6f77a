"""Breaks of the GitOps generators deploy/README.md documents."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import EXAMPLES, REPO

GENERATOR = (
    REPO
    / "deploy/gitops/kustomize/plugin/integrations.igny8.com/v1alpha1/settingsrender/SettingsRender"
)


@pytest.mark.parametrize(
    "value", ['"declarations"', "'declarations'", "declarations  # the checkout"]
)
def test_the_kustomize_generator_reads_its_file_as_yaml(tmp_path: pathlib.Path, value: str) -> None:
    """deploy/README.md:453-459 ("a generator file names the declarations directory
    (gitops/example/settings.yaml)"): the generator file is a YAML object.

    Broke: the generator takes ``declarations:`` with ``sed``, so the same YAML value quoted
    (``declarations: "declarations"``) or followed by a comment is passed verbatim, quotes
    and comment included: ``render`` exits 2 "not a directory" and the kustomize build fails
    (deploy/gitops/kustomize/.../SettingsRender). Run as kustomize runs an exec generator:
    the generator file as $1, from the kustomization's directory."""
    shutil.copytree(EXAMPLES, tmp_path / "declarations")
    (tmp_path / "settings.yaml").write_text(
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: SettingsRender\n"
        f"metadata:\n  name: effective-settings\ndeclarations: {value}\n"
    )
    env = {
        **os.environ,
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [str(GENERATOR), "settings.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "kind: ConfigMap" in done.stdout


def _discover_command() -> list[str]:
    plugin = yaml.safe_load((REPO / "deploy/gitops/argocd-plugin.yaml").read_text())
    command: list[str] = plugin["spec"]["discover"]["find"]["command"]
    return command


@pytest.mark.parametrize(
    "kind_line",
    [
        'kind: "GlobalIntegrationSettings"',
        "kind: 'GlobalIntegrationSettings'",
        "kind:  GlobalIntegrationSettings",
    ],
)
def test_the_argocd_plugin_claims_a_directory_with_any_spelling_of_the_global(
    tmp_path: pathlib.Path, kind_line: str
) -> None:
    """deploy/README.md:447-452 (the Argo CD plugin "claims a directory holding a
    ``GlobalIntegrationSettings`` and runs ``settings-controller render .`` there").

    Broke: discovery greps for the literal line ``^kind: GlobalIntegrationSettings``; the same
    YAML with the kind quoted or with two spaces after the colon (which ``render`` and
    ``validate`` accept) is not claimed, so Argo CD applies the raw declarations instead of
    the rendered ConfigMaps (deploy/gitops/argocd-plugin.yaml ``discover``)."""
    shutil.copytree(EXAMPLES, tmp_path / "declarations")
    global_ = tmp_path / "declarations" / "global.yaml"
    global_.write_text(global_.read_text().replace("kind: GlobalIntegrationSettings", kind_line))
    # Run as Argo CD runs it: the command as written, in the sidecar that has
    # settings-controller on its PATH (the plugin's generate command needs it too).
    env = {
        **os.environ,
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        _discover_command(),
        cwd=tmp_path / "declarations",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the directory is not claimed"
