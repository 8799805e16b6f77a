"""Generate deploy/install.yaml, the Helm chart's templates and its README from ``kubectl kustomize deploy/``.

kustomize is the one source of the objects: this script reads its output on stdin and writes

- ``deploy/install.yaml``: the same objects, one file (``kubectl apply -f``);
- ``deploy/chart/settings-controller/templates/``: one template per object (the CRDs
  included, behind ``crds.enabled``), the object as kustomize wrote it with the chart's
  values put in: the release namespace wherever ``settings-controller-system`` stood
  (metadata, RoleBinding subjects, the admission policies' reserved namespaces), the
  install's ServiceAccount wherever the operator's identity stood (``serviceAccountName``,
  subjects, the policies' ``system:serviceaccount:<namespace>:<name>``), image, replicas,
  scheduling, extra args/env/volumes, the metrics port; plus the optional ServiceMonitor
  of deploy/prometheus/, NetworkPolicies of deploy/network-policy/ and the gateway of
  deploy/gateway/ (behind ``gateway.enabled``: its replicas, audience and the operator's
  image are values);
- ``templates/_generated.tpl``: what the hand-written templates (PodDisruptionBudget,
  helpers) must agree on with kustomize: the Deployment's selector, the ServiceAccount's name;
- ``deploy/chart/settings-controller/README.md``: the values table, read from the
  ``# --`` comments of values.yaml (helm-docs' convention), and the chart's notes;
- the defaults in values.yaml and Chart.yaml that kustomize also states (image
  repository, appVersion = the image tag, metrics port, replicas): rewritten in place.

values.yaml, values.schema.json, NOTES.txt, _helpers.tpl and poddisruptionbudget.yaml
are written by hand; a test renders the chart with default values and compares it
with ``kubectl kustomize deploy/`` (modulo Helm's own labels).

``make manifests`` runs it; ``--check`` writes nothing and exits 1 on drift.

    kubectl kustomize deploy/ | python deploy/chart/generate.py [--check]
    python deploy/chart/generate.py --kubectl .cluster/bin/kubectl
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import values_doc
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[1]
CHART = DEPLOY / "chart" / "settings-controller"
INSTALL = DEPLOY / "install.yaml"
MONITOR = DEPLOY / "prometheus" / "monitor.yaml"
NETWORK_POLICY = DEPLOY / "network-policy"
GATEWAY = DEPLOY / "gateway"
HEADER = "# DO NOT EDIT: generated from `kubectl kustomize deploy/` by `make manifests`.\n"

# The install identity deploy/ states; every occurrence becomes the release's.
NAMESPACE = "settings-controller-system"
TENANT_ROLE = "settings-controller-tenant"
METRICS_SERVICE = "settings-controller-metrics"

CLUSTER_SCOPED = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")

NS = '{{ include "settings-controller.namespace" . }}'
SA = '{{ include "settings-controller.serviceAccountName" . }}'

Block = Callable[[int], list[str]]


class _Marks:
    """Placeholders put into an object before dumping, replaced by template text after.

    A scalar placeholder is a string value; a block placeholder is a mapping key
    (``KEY: x``) or a list item (``- KEY``) whose line becomes template lines at its indent.
    """

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.scalars: dict[str, str] = {}
        self.blocks: dict[str, Block] = {}

    def scalar(self, text: str) -> str:
        key = f"__scalar{next(self._ids)}__"
        self.scalars[key] = text
        return key

    def block(self, lines: Block) -> str:
        key = f"__block{next(self._ids)}__"
        self.blocks[key] = lines
        return key

    def apply(self, text: str) -> str:
        out = []
        for line in text.splitlines():
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            key = stripped.removeprefix("- ").removesuffix(": x")
            if key in self.blocks and stripped in (f"{key}: x", f"- {key}"):
                out.extend(indent + row for row in self.blocks[key](len(indent)))
                continue
            for placeholder, value in self.scalars.items():
                line = line.replace(placeholder, value)
            out.append(line)
        return "\n".join(out) + "\n"


def _to_yaml(key: str, expr: str) -> Block:
    """``key:`` followed by ``toYaml expr`` (a map or list value from values.yaml)."""
    return lambda i: [f"{key}:", f"  {{{{- toYaml {expr} | nindent {i + 2} }}}}"]


def _with(key: str, expr: str) -> Block:
    """``key:`` and ``toYaml expr`` only when the value is not empty."""
    return lambda i: [
        f"{{{{- with {expr} }}}}",
        f"{key}:",
        f"  {{{{- toYaml . | nindent {i + 2} }}}}",
        "{{- end }}",
    ]


def _merged(expr: str) -> Block:
    """Extra entries of a map (labels, annotations) from a values map, when not empty."""
    return lambda i: [f"{{{{- with {expr} }}}}", f"{{{{- toYaml . | nindent {i} }}}}", "{{- end }}"]


def _annotate(meta: dict[str, Any], marks: _Marks, expr: str) -> None:
    """Annotations from a values map, added to the object's own (if it has any)."""
    if "annotations" in meta:
        meta["annotations"][marks.block(_merged(expr))] = "x"
    else:
        meta[marks.block(_with("annotations", expr))] = "x"


def _labels(own: Any, extra: str = "", pod: bool = False) -> Block:
    """The chart's labels beside an object's own (``own``: its keys, which win)."""
    keys = " ".join(json.dumps(k) for k in own)
    args = f'dict "root" . "own" (list {keys})'
    args += f' "extra" {extra}' if extra else ""
    args += ' "pod" true' if pod else ""
    return lambda i: [f'{{{{- include "settings-controller.labels" ({args}) | nindent {i} }}}}']


def _include(name: str) -> Block:
    return lambda i: [f'{{{{- include "{name}" . | nindent {i} }}}}']


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1 << 16)


def _escape(text: str) -> str:
    """Literal ``{{`` in an object must not be read as a template action."""
    return text.replace("{{", '{{ "{{" }}')


def _toggle(condition: str, body: str) -> str:
    return f"{{{{- if {condition} }}}}\n{body}{{{{- end }}}}\n"


def _metrics_port(objects: list[dict[str, Any]]) -> int | None:
    """The port of ``--metrics-bind-address`` (else of the container port named metrics)."""
    for obj in objects:
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            args = container.get("args", [])
            for i, arg in enumerate(args):
                value = None
                if arg.startswith("--metrics-bind-address="):
                    value = arg.partition("=")[2]
                elif arg == "--metrics-bind-address" and i + 1 < len(args):
                    value = args[i + 1]
                if value and re.fullmatch(r".*:\d+", value):
                    return int(value.rpartition(":")[2])
            for port in container.get("ports", []):
                if port.get("name") == "metrics":
                    return int(port["containerPort"])
    return None


def _service_account(objects: list[dict[str, Any]]) -> str:
    return next(o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount")


def _deployment(obj: dict[str, Any], marks: _Marks, port: int | None) -> None:
    spec = obj["spec"]
    spec["replicas"] = marks.scalar("{{ .Values.replicaCount }}")
    spec.pop("strategy", None)
    spec[marks.block(_to_yaml("strategy", ".Values.strategy"))] = "x"
    pod = spec["template"]
    meta = pod["metadata"]
    labels = meta.setdefault("labels", {})
    labels[marks.block(_labels(list(labels), ".Values.podLabels", pod=True))] = "x"
    notes = meta.get("annotations", {})
    if port is not None and notes.get("prometheus.io/port") == str(port):
        notes["prometheus.io/port"] = marks.scalar("{{ .Values.metrics.port | quote }}")
    _annotate(meta, marks, ".Values.podAnnotations")
    pspec = pod["spec"]
    pspec[marks.block(_with("imagePullSecrets", ".Values.imagePullSecrets"))] = "x"
    pspec["serviceAccountName"] = marks.scalar(SA)
    pspec[marks.block(lambda i: [
        "{{- with .Values.priorityClassName }}",
        "priorityClassName: {{ . | quote }}",
        "{{- end }}",
    ])] = "x"  # fmt: skip
    pspec.pop("securityContext", None)
    pspec[marks.block(_to_yaml("securityContext", ".Values.podSecurityContext"))] = "x"
    for key in ("nodeSelector", "affinity", "tolerations", "topologySpreadConstraints"):
        pspec[marks.block(_with(key, f".Values.{key}"))] = "x"
    container = pspec["containers"][0]
    container["image"] = marks.scalar('{{ include "settings-controller.image" . }}')
    container["imagePullPolicy"] = marks.scalar("{{ .Values.image.pullPolicy }}")
    args = container.setdefault("args", [])
    if port is not None:
        at_port = ":" + marks.scalar("{{ .Values.metrics.port }}")
        args[:] = [
            re.sub(rf":{port}$", at_port, a)
            if a.startswith("--metrics-bind-address")
            or (i and args[i - 1] == "--metrics-bind-address")
            else a
            for i, a in enumerate(args)
        ]
    # After kustomize's args: the last spelling of a flag wins, so values override them.
    args.append(marks.block(_include("settings-controller.args")))
    container.setdefault("env", []).append(marks.block(_merged(".Values.extraEnv")))
    if port is not None:
        for entry in container.get("ports", []):
            if entry.get("containerPort") == port:
                entry["containerPort"] = marks.scalar("{{ .Values.metrics.port }}")
    container.pop("resources", None)
    container[marks.block(_to_yaml("resources", ".Values.resources"))] = "x"
    container.pop("securityContext", None)
    container[marks.block(_to_yaml("securityContext", ".Values.securityContext"))] = "x"
    container.setdefault("volumeMounts", []).append(
        marks.block(_merged(".Values.extraVolumeMounts"))
    )
    pspec.setdefault("volumes", []).append(marks.block(_merged(".Values.extraVolumes")))


def _subjects(obj: dict[str, Any], marks: _Marks, account: str) -> None:
    for subject in obj.get("subjects", []):
        if subject.get("kind") == "ServiceAccount" and subject.get("name") == account:
            subject["name"] = marks.scalar(SA)


def template(obj: dict[str, Any], account: str, port: int | None, gateway: bool = False) -> str:
    """One object as a template of the chart's values (``gateway``: of deploy/gateway/)."""
    obj = copy.deepcopy(obj)
    kind, name = obj["kind"], obj["metadata"]["name"]
    marks = _Marks()
    if gateway:
        return _gateway_template(obj, marks)
    meta = obj["metadata"]
    if kind in CLUSTER_SCOPED:
        # kustomize's namespace transformer does not know these kinds are cluster-scoped.
        meta.pop("namespace", None)
    labels = meta.setdefault("labels", {})
    extra = ".Values.metrics.serviceMonitor.additionalLabels" if kind == "ServiceMonitor" else ""
    labels[marks.block(_labels(list(labels), extra))] = "x"
    if kind == "CustomResourceDefinition":
        keep = ["{{- if .Values.crds.keep }}", "helm.sh/resource-policy: keep", "{{- end }}"]
        if "annotations" in meta:
            meta["annotations"][marks.block(lambda i: keep)] = "x"
        else:
            meta[marks.block(lambda i: [
                "{{- if .Values.crds.keep }}",
                "annotations:",
                "  helm.sh/resource-policy: keep",
                "{{- end }}",
            ])] = "x"  # fmt: skip
    elif kind == "Deployment":
        _deployment(obj, marks, port)
    elif kind == "ServiceAccount":
        meta["name"] = marks.scalar(SA)
        _annotate(meta, marks, ".Values.serviceAccount.annotations")
        obj[marks.block(lambda i: [
            "{{- if not .Values.serviceAccount.automount }}",
            "automountServiceAccountToken: false",
            "{{- end }}",
        ])] = "x"  # fmt: skip
    elif kind == "Service" and name == METRICS_SERVICE and port is not None:
        for entry in obj["spec"]["ports"]:
            if entry.get("port") == port:
                entry["port"] = marks.scalar("{{ .Values.metrics.port }}")
    elif kind == "NetworkPolicy" and port is not None:
        for rule in obj["spec"].get("ingress", []):
            for entry in rule.get("ports", []):
                if entry.get("port") in (port, str(port)):
                    entry["port"] = marks.scalar("{{ .Values.metrics.port }}")
    elif kind == "ServiceMonitor":
        endpoint = obj["spec"]["endpoints"][0]
        endpoint["interval"] = marks.scalar("{{ .Values.metrics.serviceMonitor.interval }}")
        # The operator's metrics are HTTPS with a TokenReview by default; Prometheus
        # presents its own token (it needs the metrics-reader ClusterRole). Whatever
        # deploy/prometheus says of the scheme, metrics.secure decides it here.
        for key in ("scheme", "bearerTokenFile", "tlsConfig"):
            endpoint.pop(key, None)
        endpoint[marks.block(lambda i: [
            "{{- if .Values.metrics.secure }}",
            "scheme: https",
            "bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
            "tlsConfig:",
            "  insecureSkipVerify: true",
            "{{- end }}",
        ])] = "x"  # fmt: skip
    _subjects(obj, marks, account)
    text = _escape(_dump(obj))
    if kind != "CustomResourceDefinition":
        # The operator's identity, then its namespace wherever it stands (metadata,
        # subjects, the admission policies' expressions and messages).
        text = text.replace(
            f"system:serviceaccount:{NAMESPACE}:{account}", f"system:serviceaccount:{NS}:{SA}"
        )
        # deploy/'s operator policies match the ServiceAccount in any namespace (a kustomize
        # overlay's namespace cannot reach into CEL); the chart knows the release's identity
        # and names it exactly, whatever serviceAccount.name says: one equality, so the
        # cheap suffix test deploy/'s condition starts with goes too (it names the default).
        text = text.replace(f'request.userInfo.username.endsWith(":{account}") && ', "")
        text = text.replace(
            f'.matches("^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:{account}$")',
            f' == "system:serviceaccount:{NS}:{SA}"',
        )
        text = text.replace(f'+ ":{account}"', f'+ ":{SA}"')
        text = text.replace(NAMESPACE, NS)
    body = marks.apply(text)
    if kind == "CustomResourceDefinition":
        body = _toggle(".Values.crds.enabled", body)
    elif kind == "Namespace":
        body = _toggle(".Values.createNamespace", body)
    elif kind == "ServiceAccount":
        body = _toggle(".Values.serviceAccount.create", body)
    elif kind == "Service" and name == METRICS_SERVICE:
        body = _toggle(".Values.metrics.enabled", body)
    elif kind == "ClusterRole" and name == TENANT_ROLE:
        body = _toggle(".Values.tenantRole.enabled", body)
    elif kind == "NetworkPolicy":
        body = _toggle(".Values.networkPolicy.enabled", body)
    elif kind == "ServiceMonitor":
        body = _toggle(
            "and .Values.metrics.enabled .Values.metrics.serviceMonitor.enabled "
            '(.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")',
            body,
        )
    return HEADER + body


def _gateway_template(obj: dict[str, Any], marks: _Marks) -> str:
    """An object of deploy/gateway/: the release's namespace and labels, the operator's image,
    ``gateway.replicaCount`` and ``gateway.audience``; rendered when ``gateway.enabled``."""
    meta = obj["metadata"]
    labels = meta.setdefault("labels", {})
    labels[marks.block(_labels(list(labels)))] = "x"
    if obj["kind"] == "Deployment":
        spec = obj["spec"]
        spec["replicas"] = marks.scalar("{{ .Values.gateway.replicaCount }}")
        pspec = spec["template"]["spec"]
        pspec[marks.block(_with("imagePullSecrets", ".Values.imagePullSecrets"))] = "x"
        container = pspec["containers"][0]
        container["image"] = marks.scalar('{{ include "settings-controller.image" . }}')
        container["imagePullPolicy"] = marks.scalar("{{ .Values.image.pullPolicy }}")
        container["args"] = [
            "--audience=" + marks.scalar("{{ .Values.gateway.audience }}")
            if a.startswith("--audience=")
            else a
            for a in container.get("args", [])
        ]
    text = _escape(_dump(obj)).replace(NAMESPACE, NS)
    return HEADER + _toggle(".Values.gateway.enabled", marks.apply(text))


def _gateway_objects(kubectl: Callable[[pathlib.Path], str] | None) -> list[dict[str, Any]]:
    """deploy/gateway/'s objects: ``kubectl kustomize`` of it, or without a kubectl its files
    with what its kustomization adds (the part-of label, the image)."""
    if not GATEWAY.is_dir():
        return []
    if kubectl is not None:
        return [o for o in yaml.safe_load_all(kubectl(GATEWAY)) if o]
    found = []
    kustomization = yaml.safe_load((GATEWAY / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    for name in kustomization["resources"]:
        for obj in yaml.safe_load_all((GATEWAY / name).read_text()):
            if not obj:
                continue
            obj["metadata"].setdefault("labels", {})["app.kubernetes.io/part-of"] = (
                "settings-controller"
            )
            if obj["kind"] == "Deployment":
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    c["image"] = f"{image['newName']}:{image['newTag']}"
            found.append(obj)
    return found


def generated_helpers(objects: list[dict[str, Any]]) -> str:
    """Named templates the hand-written ones share with the kustomize objects."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    selector = _dump(deployment["spec"]["selector"]["matchLabels"]).rstrip("\n")
    return (
        HEADER
        + "{{/* The Deployment's selector (immutable: never add a label to it). */}}\n"
        + '{{- define "settings-controller.selectorLabels" -}}\n'
        + selector
        + "\n{{- end }}\n\n"
        + "{{/* The ServiceAccount's name in deploy/rbac. */}}\n"
        + '{{- define "settings-controller.defaultServiceAccountName" -}}\n'
        + _service_account(objects)
        + "\n{{- end }}\n"
    )


def _extra_objects(
    objects: list[dict[str, Any]], kubectl: Callable[[pathlib.Path], str] | None
) -> list[dict[str, Any]]:
    """deploy/prometheus's ServiceMonitor and deploy/network-policy's NetworkPolicies
    (optional overlays, not in ``kubectl kustomize deploy/``, unless it includes them)."""
    found = [yaml.safe_load(MONITOR.read_text())]
    if NETWORK_POLICY.is_dir() and not any(o["kind"] == "NetworkPolicy" for o in objects):
        if kubectl is not None:
            stream = kubectl(NETWORK_POLICY)
        else:
            stream = "\n---\n".join(
                p.read_text()
                for p in sorted(NETWORK_POLICY.glob("*.yaml"))
                if p.name != "kustomization.yaml"
            )
        for obj in yaml.safe_load_all(stream):
            if obj and obj["kind"] == "NetworkPolicy":
                obj["metadata"].setdefault("namespace", NAMESPACE)
                found.append(obj)
    return found


def _file_name(obj: dict[str, Any]) -> str:
    if obj["kind"] == "Namespace":
        return "namespace.yaml"
    if obj["kind"] == "ServiceMonitor":
        return "servicemonitor.yaml"
    return f"{obj['kind'].lower()}_{obj['metadata']['name']}.yaml"


def _set_scalar(text: str, path: str, value: str) -> str:
    """``text`` (YAML with comments) with the scalar at dotted ``path`` set to ``value``."""
    stack: list[tuple[int, str]] = []
    out = []
    for line in text.splitlines(keepends=True):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):( *)([^#\n]*?)(\s*(#.*)?)$", line.rstrip("\n"))
        if match and not line.lstrip().startswith("#"):
            indent = len(match[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match[2]))
            if ".".join(k for _, k in stack) == path and match[4]:
                line = f"{match[1]}{match[2]}: {value}{match[5]}\n"
        out.append(line)
    return "".join(out)


def synced_defaults(objects: list[dict[str, Any]]) -> dict[pathlib.Path, str]:
    """values.yaml and Chart.yaml with the defaults kustomize states."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    repository, _, tag = container["image"].rpartition(":")
    values = (CHART / "values.yaml").read_text()
    values = _set_scalar(values, "image.repository", repository)
    values = _set_scalar(values, "replicaCount", str(deployment["spec"]["replicas"]))
    port = _metrics_port(objects)
    if port is not None:
        values = _set_scalar(values, "metrics.port", str(port))
    chart = _set_scalar((CHART / "Chart.yaml").read_text(), "appVersion", f'"{tag}"')
    return {CHART / "values.yaml": values, CHART / "Chart.yaml": chart}


def generate(
    stream: str, kubectl: Callable[[pathlib.Path], str] | None = None
) -> dict[pathlib.Path, str]:
    """Every generated file and its content."""
    objects = [o for o in yaml.safe_load_all(stream) if o]
    account, port = _service_account(objects), _metrics_port(objects)
    files = {INSTALL: HEADER + stream}
    files.update(synced_defaults(objects))
    for obj in objects + _extra_objects(objects, kubectl):
        files[CHART / "templates" / _file_name(obj)] = template(obj, account, port)
    for obj in _gateway_objects(kubectl):
        files[CHART / "templates" / _file_name(obj)] = template(obj, account, port, gateway=True)
    files[CHART / "templates" / "_generated.tpl"] = generated_helpers(objects)
    files[CHART / "README.md"] = values_doc.readme(
        files[CHART / "values.yaml"], (CHART / "README.md.tpl").read_text()
    )
    return files


def _generated(directory: pathlib.Path) -> set[pathlib.Path]:
    return {
        p
        for p in [*directory.glob("*.yaml"), *directory.glob("*.tpl")]
        if p.read_text().startswith(HEADER)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    parser.add_argument(
        "--kubectl",
        metavar="PATH",
        help="run `PATH kustomize deploy/` (and deploy/network-policy/) instead of reading stdin",
    )
    args = parser.parse_args(argv)

    def kustomize(directory: pathlib.Path) -> str:
        return subprocess.run(
            [str(args.kubectl), "kustomize", str(directory)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    stream = kustomize(DEPLOY) if args.kubectl else sys.stdin.read()
    files = generate(stream, kustomize if args.kubectl else None)
    old = _generated(CHART / "templates") | _generated(CHART / "crds")
    stale = old - set(files)
    drift = sorted(
        [p for p, text in files.items() if not p.is_file() or p.read_text() != text] + list(stale)
    )
    if args.check:
        for path in drift:
            print(f"{path.relative_to(DEPLOY.parent)}: differs from `make manifests`")
        return 1 if drift else 0
    for path in stale:
        path.unlink()
    if (CHART / "crds").is_dir() and not any((CHART / "crds").iterdir()):
        (CHART / "crds").rmdir()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
