"""Breaks of the chart's values (deploy/chart/settings-controller/README.md), rendered by the
Go-built helm (.cluster/bin/helm, as tests/operator/test_helm.py uses it)."""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from tests.operator import support

pytestmark = pytest.mark.cluster  # the helm fixture builds next to the harness

CHART = support.REPO / "deploy" / "chart" / "settings-controller"


class _Strict(yaml.SafeLoader):
    """A loader that refuses a mapping key given twice (as the API server's decoder does)."""


def _no_duplicates(loader: _Strict, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    assert not twice, f"mapping keys given twice at line {node.start_mark.line + 1}: {twice}"
    return loader.construct_mapping(node)


_Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def test_common_labels_reach_every_object_without_breaking_it(helm: pathlib.Path) -> None:
    """deploy/chart/settings-controller/README.md, values table: "commonLabels | Labels added
    to every object the chart renders, the pods included." (no exception listed; the values
    schema accepts any string map). Broke: ``--set commonLabels.app\\.kubernetes\\.io/name=other``
    (a team's own naming label) renders every object with ``app.kubernetes.io/name`` twice in
    one mapping (``helm template`` exits 0): a strict YAML decoder refuses the manifest, and a
    last-wins decoder gives the pod template ``name: other`` while the Deployment's selector
    keeps ``name: settings-controller`` (not verified here against the API server). Same with ``app.kubernetes.io/instance``,
    ``managed-by``, ``version``, ``part-of``, ``component``. Fault: the chart's
    templates/_helpers.tpl ``settings-controller.labels`` and the Deployment template append
    ``toYaml .Values.commonLabels`` after fixed labels instead of merging into one dict (or
    the values schema refusing those keys)."""
    done = subprocess.run(
        [
            str(helm),
            "template",
            "settings-controller",
            str(CHART),
            "--kube-version=1.37.0",
            "--set",
            "commonLabels.app\\.kubernetes\\.io/name=other",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.load_all(done.stdout, Loader=_Strict) if o]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
