"""Generate deploy/install.yaml and the Helm chart's templates from ``kubectl kustomize deploy/``.

kustomize is the one source: this script reads its output on stdin and writes

- ``deploy/install.yaml``: the same objects, one file (``kubectl apply -f``);
- ``deploy/chart/settings-controller/crds/``: the CRDs (Helm installs them first,
  never templates or deletes them);
- ``deploy/chart/settings-controller/templates/``: one template per object, the
  object as kustomize wrote it with the chart's values put in: image, replicas,
  resources, extra labels, and toggles around the Namespace, the metrics Service
  and the tenant ClusterRole; plus the optional ServiceMonitor of deploy/prometheus/;
- ``deploy/chart/settings-controller/values.yaml``: the defaults, read from the
  same objects, so the chart with default values renders exactly those objects.

``make manifests`` runs it; ``--check`` writes nothing and exits 1 on drift.

    kubectl kustomize deploy/ | python deploy/chart/generate.py [--check]
    python deploy/chart/generate.py --kubectl .cluster/bin/kubectl
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import subprocess
import sys
from typing import Any

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[1]
CHART = DEPLOY / "chart" / "settings-controller"
INSTALL = DEPLOY / "install.yaml"
MONITOR = DEPLOY / "prometheus" / "monitor.yaml"
HEADER = "# DO NOT EDIT: generated from `kubectl kustomize deploy/` by `make manifests`.\n"

TENANT_ROLE = "settings-controller-tenant"
METRICS_SERVICE = "settings-controller-metrics"

# Placeholders put into the objects before dumping, replaced by template text after.
_EXTRA_LABELS = "__extra_labels__"
_RESOURCES = "__resources__"


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1 << 16)


def _escape(text: str) -> str:
    """Literal ``{{`` in an object must not be read as a template action."""
    return text.replace("{{", '{{ "{{" }}')


def _toggle(condition: str, body: str) -> str:
    return f"{{{{- if {condition} }}}}\n{body}{{{{- end }}}}\n"


def template(obj: dict[str, Any]) -> str:
    """One object as a template of the chart's values."""
    obj = copy.deepcopy(obj)
    kind, name = obj["kind"], obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})[_EXTRA_LABELS] = "x"
    replaced: dict[str, str] = {}
    if kind == "Deployment":
        spec = obj["spec"]
        spec["replicas"] = "__replicas__"
        replaced["__replicas__"] = "{{ .Values.replicaCount }}"
        container = spec["template"]["spec"]["containers"][0]
        container["image"] = "__image__"
        replaced["__image__"] = "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        container["imagePullPolicy"] = "__pull__"
        replaced["__pull__"] = "{{ .Values.image.pullPolicy }}"
        container["resources"] = _RESOURCES
    lines = []
    for line in _escape(_dump(obj)).splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped == f"{_EXTRA_LABELS}: x":
            lines.append(f"{indent}{{{{- with .Values.extraLabels }}}}")
            lines.append(f"{indent}{{{{- toYaml . | nindent {len(indent)} }}}}")
            lines.append(f"{indent}{{{{- end }}}}")
            continue
        if stripped == f"resources: {_RESOURCES}":
            lines.append(f"{indent}resources:")
            lines.append(
                f"{indent}  {{{{- toYaml .Values.resources | nindent {len(indent) + 2} }}}}"
            )
            continue
        for placeholder, text in replaced.items():
            line = line.replace(placeholder, text)
        lines.append(line)
    body = "\n".join(lines) + "\n"
    if kind == "Namespace":
        body = _toggle(".Values.createNamespace", body)
    elif kind == "Service" and name == METRICS_SERVICE:
        body = _toggle(".Values.metrics.enabled", body)
    elif kind == "ClusterRole" and name == TENANT_ROLE:
        body = _toggle(".Values.tenantRole.enabled", body)
    return HEADER + body


def values(objects: list[dict[str, Any]]) -> str:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    repository, _, tag = container["image"].rpartition(":")
    document = {
        "image": {
            "repository": repository,
            "tag": tag,
            "pullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
        },
        "replicaCount": deployment["spec"]["replicas"],
        "resources": container["resources"],
        "extraLabels": {},
        "createNamespace": True,
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": False}},
        "tenantRole": {"enabled": True},
    }
    notes = (
        "# Defaults read from the kustomize objects: with them the chart renders exactly\n"
        "# `kubectl kustomize deploy/`. replicaCount stays 1: one writer at a time.\n"
        "# metrics.serviceMonitor needs the Prometheus Operator's CRDs.\n"
    )
    return HEADER + notes + _dump(document)


def monitor_template() -> str:
    """deploy/prometheus's ServiceMonitor, when metrics and serviceMonitor are both on."""
    body = template(yaml.safe_load(MONITOR.read_text())).removeprefix(HEADER)
    condition = "and .Values.metrics.enabled .Values.metrics.serviceMonitor.enabled"
    return HEADER + _toggle(condition, body)


def _file_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}_{obj['metadata']['name']}.yaml"


def generate(stream: str) -> dict[pathlib.Path, str]:
    """Every generated file and its content."""
    objects = [o for o in yaml.safe_load_all(stream) if o]
    files = {INSTALL: HEADER + stream}
    files[CHART / "values.yaml"] = values(objects)
    for obj in objects:
        if obj["kind"] == "CustomResourceDefinition":
            files[CHART / "crds" / _file_name(obj)] = HEADER + _dump(obj)
        else:
            files[CHART / "templates" / _file_name(obj)] = template(obj)
    files[CHART / "templates" / "servicemonitor.yaml"] = monitor_template()
    return files


def _generated(directory: pathlib.Path) -> set[pathlib.Path]:
    return {p for p in directory.glob("*.yaml") if p.read_text().startswith(HEADER)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    parser.add_argument(
        "--kubectl", metavar="PATH", help="run `PATH kustomize deploy/` instead of reading stdin"
    )
    args = parser.parse_args(argv)
    if args.kubectl:
        stream = subprocess.run(
            [args.kubectl, "kustomize", str(DEPLOY)], check=True, capture_output=True, text=True
        ).stdout
    else:
        stream = sys.stdin.read()
    files = generate(stream)
    stale = (_generated(CHART / "templates") | _generated(CHART / "crds")) - set(files)
    drift = sorted(
        [p for p, text in files.items() if not p.is_file() or p.read_text() != text] + list(stale)
    )
    if args.check:
        for path in drift:
            print(f"{path.relative_to(DEPLOY.parent)}: differs from `make manifests`")
        return 1 if drift else 0
    for path in stale:
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
