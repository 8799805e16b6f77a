"""The Helm chart and deploy/install.yaml, with the real ``helm`` (built from Go modules,
tests/harness/helm) and the harness's kubectl: generated from ``kubectl kustomize deploy/``
without drift, the same objects with default values, any namespace and ServiceAccount
flowing into every namespaced object and the admission policies, the values doing what
they say, the schema refusing what it must, ``helm lint --strict``, and on a control plane
of their own: an install into another namespace confining that identity, the upgrade from
chart 0.1.0 delivering a CRD change, and every ``helm`` command the docs show."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller.generators import policies
from tests.harness import controlplane
from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

DEPLOY = support.REPO / "deploy"
CHART = DEPLOY / "chart" / "settings-controller"
GENERATOR = DEPLOY / "chart" / "generate.py"
DOCS = (support.REPO / "README.md", DEPLOY / "README.md", CHART / "README.md")
# Chart 0.1.0 as first committed: CRDs in crds/, without plans.*.projectKeys or endpoints.
PREVIOUS_CHART_COMMIT = "5dfcc4b"
# Helm's own labels (and the CRDs' keep annotation): the only difference from kustomize's
# objects with default values.
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
)
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# `helm template` assumes Kubernetes 1.20 when helm is built without its release
# ldflags, as tests/harness/helm builds it; the chart needs 1.30 (kubeVersion).
KUBE_VERSION = "--kube-version=1.37.0"
OPERATOR_POLICIES = (
    "settings-controller-operator-configmaps",
    "settings-controller-operator-secrets",
    "settings-controller-operator-namespaces",
)

Objects = dict[tuple[str, str, str], dict[str, Any]]


def _run(*args: str | pathlib.Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _objects(stream: str) -> Objects:
    """By (kind, namespace, name); kustomize gives the admission policies a namespace
    (it does not know they are cluster-scoped; the API server ignores it): dropped."""
    found = {}
    for obj in yaml.safe_load_all(stream):
        if obj:
            meta = obj["metadata"]
            if obj["kind"] in CLUSTER_SCOPED:
                meta.pop("namespace", None)
            found[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return found


def _kustomize(kube: Kube) -> str:
    return kube.kubectl("kustomize", str(DEPLOY)).stdout


def _render(helm: pathlib.Path, *args: str, namespace: str = "settings-controller-system") -> str:
    return _run(
        helm,
        "template",
        "settings-controller",
        CHART,
        KUBE_VERSION,
        f"--namespace={namespace}",
        *args,
    )


def _template(
    helm: pathlib.Path, *args: str, namespace: str = "settings-controller-system"
) -> Objects:
    return _objects(_render(helm, *args, namespace=namespace))


def _without_helm_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    labels = obj["metadata"].get("labels", {})
    for key in HELM_LABELS:
        labels.pop(key, None)
    # crds.keep: Helm's own annotation too.
    notes = obj["metadata"].get("annotations", {})
    if notes.pop("helm.sh/resource-policy", None) and not notes:
        del obj["metadata"]["annotations"]
    return obj


def _refusal(helm: pathlib.Path, *args: str) -> str:
    done = subprocess.run(
        [str(helm), "template", "settings-controller", str(CHART), KUBE_VERSION, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, f"{args} rendered:\n{done.stdout[:500]}"
    return done.stderr


def test_generated_files_are_current(kube: Kube) -> None:
    check = subprocess.run(
        [str(support.REPO / ".venv/bin/python"), str(GENERATOR), "--check", "--kubectl",
         kube.kubectl_path],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, f"run `make manifests`:\n{check.stdout}{check.stderr}"


def test_defaults_render_the_kustomize_objects(kube: Kube, helm: pathlib.Path) -> None:
    expected = _objects(_kustomize(kube))
    assert _objects((DEPLOY / "install.yaml").read_text()) == expected
    # createNamespace: the one object off by default (`--create-namespace` makes it).
    rendered = _template(helm, "--set=createNamespace=true")
    assert sorted(rendered) == sorted(expected)
    for key, obj in expected.items():
        if key[0] == "ValidatingAdmissionPolicy" and key[2] in OPERATOR_POLICIES:
            # deploy/ matches the ServiceAccount in any namespace (an overlay's namespace cannot
            # reach into CEL); the chart names the release's identity exactly.
            (condition,) = obj["spec"]["matchConditions"]
            assert condition["expression"] == policies.MATCHES_OPERATOR
            condition["expression"] = (
                'request.userInfo.username == "system:serviceaccount:'
                'settings-controller-system:settings-controller"'
            )
        assert _without_helm_metadata(rendered[key]) == obj, key
        labels = rendered[key]["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", key
    assert ("Namespace", "", "settings-controller-system") not in _template(helm)


def _assert_identity(rendered: Objects, text: str, namespace: str, account: str) -> None:
    """Every namespaced object in ``namespace``; the operator's identity is namespace/account."""
    assert "settings-controller-system" not in text
    for (kind, ns, name), obj in rendered.items():
        assert ns == ("" if kind in CLUSTER_SCOPED else namespace), (kind, name)
        for subject in obj.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                assert (subject["namespace"], subject["name"]) == (namespace, account), name
    user = f"system:serviceaccount:{namespace}:{account}"
    for name in OPERATOR_POLICIES:
        policy = rendered[("ValidatingAdmissionPolicy", "", name)]
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f'request.userInfo.username == "{user}"'
        reserved = [
            v["expression"] for v in policy["spec"]["validations"] if "reserved" in v["message"]
        ]
        assert reserved and all(f'"{namespace}"' in e for e in reserved), name
    accounts = rendered[("ValidatingAdmissionPolicy", "", "settings-controller-accounts")]
    assert f'"{namespace}"' in accounts["spec"]["validations"][0]["expression"]
    pod = rendered[("Deployment", namespace, "settings-controller")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


@pytest.mark.parametrize(
    ("args", "account"),
    [
        pytest.param([], "settings-controller", id="release-namespace"),
        pytest.param(["--set=serviceAccount.name=integrations-operator"], "integrations-operator",
                     id="own-serviceaccount"),
        pytest.param(["--set=serviceAccount.create=false", "--set=serviceAccount.name=given"],
                     "given", id="existing-serviceaccount"),
    ],
)  # fmt: skip
def test_another_namespace_everywhere(helm: pathlib.Path, args: list[str], account: str) -> None:
    text = _render(helm, "--set=createNamespace=true", *args, namespace="platform-integrations")
    rendered = _objects(text)
    _assert_identity(rendered, text, "platform-integrations", account)
    assert ("Namespace", "", "platform-integrations") in rendered
    accounts = [k for k in rendered if k[0] == "ServiceAccount"]
    assert accounts == ([] if "create=false" in " ".join(args) else
                        [("ServiceAccount", "platform-integrations", account)])  # fmt: skip


def test_namespace_override(helm: pathlib.Path) -> None:
    text = _render(helm, "--set=namespaceOverride=ops", namespace="default")
    _assert_identity(_objects(text), text, "ops", "settings-controller")


def _deployment(rendered: Objects, namespace: str = "settings-controller-system") -> dict[str, Any]:
    return rendered[("Deployment", namespace, "settings-controller")]


def test_values(helm: pathlib.Path) -> None:
    proxy = [
        {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"},
        {"name": "NO_PROXY", "value": "kubernetes.default.svc,.svc,.cluster.local"},
    ]
    toleration = {
        "key": "dedicated",
        "operator": "Equal",
        "value": "platform",
        "effect": "NoSchedule",
    }
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
              "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "settings-controller"}}}  # fmt: skip
    rendered = _template(
        helm,
        "--set=image.repository=registry.example/sc",
        "--set=image.tag=1.2.3",
        "--set=image.pullPolicy=Always",
        "--set=imagePullSecrets[0].name=regcred",
        "--set=replicaCount=2",
        "--set=podDisruptionBudget.enabled=true",
        "--set=resources.limits.memory=1Gi",
        "--set=commonLabels.team=platform",
        "--set=podLabels.cost-centre=ai",
        "--set=podAnnotations.example\\.com/owner=platform",
        "--set=nodeSelector.pool=system",
        f"--set-json=tolerations=[{json.dumps(toleration)}]",
        f"--set-json=topologySpreadConstraints=[{json.dumps(spread)}]",
        "--set=priorityClassName=platform-critical",
        f"--set-json=extraEnv={json.dumps(proxy)}",
        "--set=extraArgs={--connection-check-interval=0}",
        '--set-json=extraVolumes=[{"name":"ca","secret":{"secretName":"private-ca"}}]',
        '--set-json=extraVolumeMounts=[{"name":"ca","mountPath":"/etc/ca","readOnly":true}]',
        "--set=logLevel=debug",
        "--set=logFormat=text",
        "--set=leaderElection.leaseDuration=30s",
        "--set=metrics.port=8443",
        "--set=metrics.secure=false",
        "--set=tenantRole.enabled=false",
        "--set=serviceAccount.annotations.iam\\.example/role=operator",
    )
    deployment = _deployment(rendered)
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/sc:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert deployment["spec"]["replicas"] == 2
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"] == [toleration]
    assert pod["spec"]["topologySpreadConstraints"] == [spread]
    assert pod["spec"]["priorityClassName"] == "platform-critical"
    assert container["env"][0]["name"] == "POD_NAMESPACE" and container["env"][1:] == proxy
    assert {"name": "ca", "secret": {"secretName": "private-ca"}} in pod["spec"]["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ca", "readOnly": True} in container["volumeMounts"]
    # The chart's flags after kustomize's, extraArgs last: the last spelling of a flag wins.
    assert container["args"][-5:] == [
        "--leader-elect-lease-duration=30s",
        "--log-level=debug",
        "--log-format=text",
        "--metrics-secure=false",
        "--connection-check-interval=0",
    ]
    assert "--metrics-bind-address=:8443" in container["args"]
    assert {"name": "metrics", "containerPort": 8443} in container["ports"]
    # No prometheus.io/scrape annotations: /metrics needs a token (deploy/prometheus).
    assert "prometheus.io/port" not in pod["metadata"]["annotations"]
    assert pod["metadata"]["annotations"]["example.com/owner"] == "platform"
    assert pod["metadata"]["labels"]["cost-centre"] == "ai"
    # The selector is immutable: values never reach it.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": "operator",
        "app.kubernetes.io/name": "settings-controller",
    }
    service = rendered[("Service", "settings-controller-system", "settings-controller-metrics")]
    assert service["spec"]["ports"][0]["port"] == 8443
    budget = rendered[("PodDisruptionBudget", "settings-controller-system", "settings-controller")]
    assert budget["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    account = rendered[("ServiceAccount", "settings-controller-system", "settings-controller")]
    assert account["metadata"]["annotations"] == {"iam.example/role": "operator"}
    assert {
        k for k, o in rendered.items() if o["metadata"]["labels"].get("team") != "platform"
    } == set()
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert ("ClusterRole", "", "settings-controller-tenant") not in rendered


def _no_key_twice(node: yaml.Node | None) -> None:
    """PyYAML keeps the last of two equal keys: look at the nodes instead."""
    if isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"a key twice at line {node.start_mark.line + 1}"
        for _, value in node.value:
            _no_key_twice(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_key_twice(item)


def test_common_labels_never_duplicate_nor_override_the_charts_own(helm: pathlib.Path) -> None:
    """Breakit2: commonLabels were appended after the fixed labels: a key the chart sets
    came out twice in one mapping (a strict decoder refuses it; a last-wins one moved the
    pods off the Deployment's selector, or the namespace off pod-security ``restricted``).
    One map now: the chart's own labels win, Helm's over commonLabels and podLabels."""
    rendered = _render(
        helm,
        "--set=createNamespace=true",
        "--set=commonLabels.pod-security\\.kubernetes\\.io/enforce=privileged",
        "--set=commonLabels.app\\.kubernetes\\.io/managed-by=someone",
        "--set=commonLabels.team=payments",
        "--set=podLabels.app\\.kubernetes\\.io/component=other",
        "--set=podLabels.team=search",
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=metrics.serviceMonitor.additionalLabels.app\\.kubernetes\\.io/name=x",
        "--set=metrics.serviceMonitor.additionalLabels.release=prom",
        "--api-versions=monitoring.coreos.com/v1",
    )
    for document in yaml.compose_all(rendered):
        _no_key_twice(document)
    objects = _objects(rendered)
    namespace = objects[("Namespace", "", "settings-controller-system")]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["app.kubernetes.io/managed-by"] == "Helm"
    assert namespace["team"] == "payments"
    deployment = _deployment(objects)
    pod = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod.items()
    assert pod["team"] == "search"  # podLabels over commonLabels, as before
    monitor = next(o for k, o in objects.items() if k[0] == "ServiceMonitor")["metadata"]["labels"]
    assert monitor["app.kubernetes.io/name"] == "settings-controller"
    assert monitor["release"] == "prom" and monitor["team"] == "payments"


def test_image_digest_and_app_version(helm: pathlib.Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = _deployment(_template(helm))["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"settings-controller:{app_version}"
    digest = "sha256:" + "ab" * 32
    pinned = _deployment(_template(helm, f"--set=image.digest={digest}", "--set=image.tag=9.9"))
    assert (
        pinned["spec"]["template"]["spec"]["containers"][0]["image"]
        == f"settings-controller@{digest}"
    )


def test_flags_off_by_default_and_when_set(helm: pathlib.Path) -> None:
    args = _deployment(_template(helm))["spec"]["template"]["spec"]["containers"][0]["args"]
    # Only kustomize's own `--leader-elect` (deploy/manager): the chart adds none by default.
    assert [a for a in args if a.startswith(("--leader-elect", "--log-", "--allow-unconfined",
                                             "--metrics-secure"))] == ["--leader-elect"]  # fmt: skip
    changed = _deployment(
        _template(
            helm,
            "--set=leaderElection.enabled=false",
            "--set=allowUnconfined=true",
            "--set=leaderElection.namespace=leases",
        )
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {
        "--leader-elect=false",
        "--allow-unconfined",
        "--leader-election-namespace=leases",
    } <= set(changed)


def test_crds_and_keep(helm: pathlib.Path) -> None:
    crds = {k: o for k, o in _template(helm).items() if k[0] == "CustomResourceDefinition"}
    assert len(crds) == 3
    assert all(
        o["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for o in crds.values()
    )
    unkept = _template(helm, "--set=crds.keep=false")
    assert all(
        "annotations" not in o["metadata"]
        for k, o in unkept.items()
        if k[0] == "CustomResourceDefinition"
    )
    assert not [
        k for k in _template(helm, "--set=crds.enabled=false") if k[0] == "CustomResourceDefinition"
    ]
    assert not (CHART / "crds").exists()  # Helm never upgrades crds/


def test_service_monitor_only_where_served(helm: pathlib.Path) -> None:
    on = "--set=metrics.serviceMonitor.enabled=true"
    assert not [k for k in _template(helm, on) if k[0] == "ServiceMonitor"]
    served = _template(helm, on, "--api-versions=monitoring.coreos.com/v1",
                       "--set=metrics.serviceMonitor.additionalLabels.release=prom")  # fmt: skip
    monitor = served[("ServiceMonitor", "settings-controller-system", "settings-controller")]
    service = served[("Service", "settings-controller-system", "settings-controller-metrics")]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["scheme"] == "https" and endpoint["bearerTokenFile"].endswith("/token")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    plain = _template(
        helm, on, "--api-versions=monitoring.coreos.com/v1", "--set=metrics.secure=false"
    )
    assert (
        "scheme"
        not in plain[("ServiceMonitor", "settings-controller-system", "settings-controller")][
            "spec"
        ]["endpoints"][0]
    )
    off = _template(
        helm, "--set=metrics.enabled=false", on, "--api-versions=monitoring.coreos.com/v1"
    )
    assert not {k for k in off if k[0] in ("Service", "ServiceMonitor")}


def test_network_policy(kube: Kube, helm: pathlib.Path) -> None:
    assert not [k for k in _template(helm) if k[0] == "NetworkPolicy"]
    rendered = _template(
        helm, "--set=networkPolicy.enabled=true", "--set=metrics.port=8443", namespace="ops"
    )
    (policy,) = [o for k, o in rendered.items() if k[0] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "ops"
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [8443]
    # With default values, the objects of deploy/network-policy/ (modulo Helm's labels).
    expected = _objects(kube.kubectl("kustomize", str(DEPLOY / "network-policy")).stdout)
    defaults = _template(helm, "--set=networkPolicy.enabled=true")
    for key, obj in expected.items():
        assert _without_helm_metadata(defaults[key]) == obj


def test_gateway(kube: Kube, helm: pathlib.Path) -> None:
    assert not [k for k in _template(helm) if "gateway" in k[2]]
    # With default values, the objects of deploy/gateway/ (modulo Helm's labels).
    expected = _objects(kube.kubectl("kustomize", str(DEPLOY / "gateway")).stdout)
    defaults = _template(helm, "--set=gateway.enabled=true")
    assert sorted(k for k in defaults if "gateway" in k[2]) == sorted(expected)
    for key, obj in expected.items():
        assert _without_helm_metadata(defaults[key]) == obj, key
    rendered = _template(
        helm,
        "--set=gateway.enabled=true",
        "--set=gateway.replicaCount=3",
        "--set=gateway.audience=ai.example.com",
        "--set=image.tag=9.9.9",
        namespace="ops",
    )
    deployment = rendered[("Deployment", "ops", "settings-controller-gateway")]
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--audience=ai.example.com" in container["args"]
    assert container["image"] == "settings-controller:9.9.9"
    binding = rendered[("RoleBinding", "ops", "settings-controller-gateway-platform-keys")]
    assert binding["subjects"][0]["namespace"] == "ops"
    assert (
        rendered[("ClusterRoleBinding", "", "settings-controller-gateway")]["subjects"][0][
            "namespace"
        ]
        == "ops"
    )
    assert "audience" in _refusal(helm, "--set=gateway.enabled=true", "--set=gateway.audience=a b")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["--set=replicaCount=2", "--set=leaderElection.enabled=false"], "replicaCount",
                     id="two-writers"),
        pytest.param(["--set-string=replicaCount=2"], "replicaCount", id="string-for-number"),
        pytest.param(["--set=replicaCount=-1"], "replicaCount", id="negative"),
        pytest.param(["--set=replicas=2"], "replicas", id="unknown-key"),
        pytest.param(["--set=logLevel=verbose"], "logLevel", id="log-level"),
        pytest.param(["--set=metrics.port=70000"], "port", id="port"),
        pytest.param(["--set=image.digest=latest"], "digest", id="digest"),
        pytest.param(["--set=serviceAccount.name=Bad_Name"], "name", id="sa-name"),
        pytest.param(["--set=leaderElection.leaseDuration=fifteen"], "leaseDuration", id="duration"),
        pytest.param(["--set=extraArgs=--verify-interval=0"], "extraArgs", id="args-not-list"),
    ],
)  # fmt: skip
def test_schema_refuses(helm: pathlib.Path, args: list[str], names: str) -> None:
    message = _refusal(helm, *args)
    assert "values don't meet the specifications of the schema" in message, message
    assert names in message, message
    lint = subprocess.run([str(helm), "lint", str(CHART), "--strict", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert lint.returncode != 0 and names in lint.stdout + lint.stderr


def test_namespace_cannot_reach_into_the_policies(helm: pathlib.Path) -> None:
    """The release namespace is written into CEL strings: a quote would make the
    operator's match condition true for every user (or for nobody)."""
    hostile = 'x" || true || "'
    done = subprocess.run(
        [str(helm), "template", "settings-controller", str(CHART), KUBE_VERSION, "-n", hostile],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "not a DNS label" in done.stderr, done.stdout[-2000:]
    assert "|| true" not in done.stdout


def test_kube_version_refused_before_1_30(helm: pathlib.Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "settings-controller", str(CHART), "--kube-version=1.29.9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "kubeVersion: >=1.30.0-0" in done.stderr, done.stderr


def test_two_replicas_with_leader_election_render(helm: pathlib.Path) -> None:
    assert _deployment(_template(helm, "--set=replicaCount=2"))["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="defaults"),
        pytest.param(["--set=replicaCount=2", "--set=podDisruptionBudget.enabled=true",
                      "--set=namespaceOverride=ops", "--set=createNamespace=true",
                      "--set=metrics.serviceMonitor.enabled=true", "--set=crds.enabled=false"],
                     id="values"),
    ],
)  # fmt: skip
def test_helm_lint(helm: pathlib.Path, args: list[str]) -> None:
    out = _run(helm, "lint", CHART, "--strict", *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_every_value_documented_in_the_readme() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_doc", DEPLOY / "chart" / "values_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = {row[0] for row in module.rows((CHART / "values.yaml").read_text())}

    def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in tree.items():
            path = prefix + key
            if path in documented:
                yield path
            elif isinstance(value, dict) and value:
                yield from leaves(value, path + ".")
            else:
                yield path

    assert set(leaves(values)) <= documented
    readme = (CHART / "README.md").read_text()
    assert all(f"| {key} |" in readme for key in documented)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


# On a control plane of their own, one per test: helm owns every object it installs, and
# no test depends on the previous one's uninstall (CI once saw `kubectl delete crd` outlast
# 120 s on a loaded machine and the next two installs fail on the CRDs it left).


@pytest.fixture
def own_cluster(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
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


def _kubectl(
    kube: Kube, config: pathlib.Path, *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([kube.kubectl_path, f"--kubeconfig={config}", *args],
                          capture_output=True, text=True, timeout=120, input=input)  # fmt: skip
    assert not check or done.returncode == 0, f"{args}\n{done.stdout}{done.stderr}"
    return done


def _documented(word: str) -> str:
    """The one ``helm`` command of the docs containing ``word`` (continuations joined);
    every doc that shows it shows it the same way."""
    found = set()
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S):
            for command in block.replace("\\\n", " ").splitlines():
                if command.startswith("helm ") and word in command:
                    found.add(" ".join(command.split()))
    assert len(found) == 1, f"{word}: {found}"
    return found.pop()


def _shell(command: str, helm: pathlib.Path, config: pathlib.Path) -> str:
    env = dict(os.environ, KUBECONFIG=str(config), PATH=f"{helm.parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", command], cwd=support.REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _refused_as(kube: Kube, config: pathlib.Path, user: str, namespace: str) -> str:
    """The operator's own ConfigMap written as ``user`` in ``namespace`` as the operator writes
    it (a server-side apply, dry run): the refusal, once the API server has loaded the
    policies (they take a moment)."""
    manifest = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"},
                           "metadata": {"name": "integration-settings", "namespace": namespace}})  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        done = _kubectl(kube, config, "apply", "--server-side", "--dry-run=server",
                        "--field-manager=settings-controller", f"--as={user}", "-f", "-",
                        check=False, input=manifest)  # fmt: skip
        if done.returncode != 0 or time.monotonic() > deadline:
            return done.stderr
        time.sleep(0.5)


def _clean(kube: Kube, helm: pathlib.Path, config: pathlib.Path, release_ns: str) -> None:
    """``helm uninstall`` leaves nothing of the release but the kept CRDs."""
    _run(
        helm,
        "uninstall",
        "settings-controller",
        f"--kubeconfig={config}",
        f"--namespace={release_ns}",
    )
    left = _kubectl(kube, config, "get", "deployment,clusterrole,validatingadmissionpolicy",
                    "-A", "-o", "name").stdout  # fmt: skip
    assert "settings-controller" not in left, left


def _previous_chart(tmp: pathlib.Path) -> pathlib.Path:
    archive = tmp / "previous.tar"
    _run("git", "-C", support.REPO, "archive", f"--output={archive}", PREVIOUS_CHART_COMMIT,
         "deploy/chart/settings-controller")  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    chart = tmp / "deploy/chart/settings-controller"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == "0.1.0"
    return chart


GLOBAL_WITH_PROJECT_KEYS = """
apiVersion: integrations.igny8.com/v1alpha1
kind: GlobalIntegrationSettings
metadata:
  name: default
spec:
  plans:
    free: {allowOverrides: false, projectKeys: false}
  integrations: {}
"""


def _apply(kube: Kube, config: pathlib.Path, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kube.kubectl_path, f"--kubeconfig={config}", "apply", "--server-side", "-f", "-"],
        input=manifest, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_upgrade_from_the_previous_chart_delivers_the_crd_change(
    helm: pathlib.Path, kube: Kube, own_cluster: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    config = f"--kubeconfig={own_cluster}"
    previous = _previous_chart(tmp_path)
    _run(helm, "install", "settings-controller", previous, config, "--namespace=default")
    _kubectl(kube, own_cluster, "create", "secret", "generic", "platform-api-keys",
             "-n", "settings-controller-system", "--from-literal=openai=x")  # fmt: skip
    old = _apply(kube, own_cluster, GLOBAL_WITH_PROJECT_KEYS)
    assert old.returncode != 0 and "projectKeys" in old.stderr, old.stderr  # not served by 0.1.0

    _shell(_documented("--take-ownership"), helm, own_cluster)
    applied = _apply(kube, own_cluster, GLOBAL_WITH_PROJECT_KEYS)
    assert applied.returncode == 0, applied.stderr
    read = json.loads(_kubectl(kube, own_cluster, "get", "gis", "default", "-o", "json").stdout)
    assert read["spec"]["plans"]["free"]["projectKeys"] is False
    # The namespace, the platform keys in it and the objects stayed where they were.
    _kubectl(
        kube, own_cluster, "get", "secret", "platform-api-keys", "-n", "settings-controller-system"
    )
    _kubectl(
        kube,
        own_cluster,
        "get",
        "deployment",
        "settings-controller",
        "-n",
        "settings-controller-system",
    )
    crd = json.loads(_kubectl(kube, own_cluster, "get", "crd", "globalintegrationsettings.integrations.igny8.com",
                              "-o", "json").stdout)  # fmt: skip
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "settings-controller"

    _run(helm, "uninstall", "settings-controller", config, "--namespace=default")
    left = _kubectl(kube, own_cluster, "get", "deployment,clusterrole", "-A", "-o", "name").stdout
    assert "settings-controller" not in left
    # CRDs stay (resource-policy keep), and with them every declaration.
    assert _kubectl(kube, own_cluster, "get", "gis", "default", "-o", "name").stdout.strip()
    # Its Namespace was part of the release: gone with it.
    _kubectl(kube, own_cluster, "wait", "--for=delete", "namespace/settings-controller-system",
             "--timeout=120s")  # fmt: skip


def test_install_in_another_namespace_confines_that_identity(
    helm: pathlib.Path, kube: Kube, own_cluster: pathlib.Path
) -> None:
    command = _documented("--namespace platform-integrations")
    assert "serviceAccount.name=integrations-operator" in command
    _shell(command, helm, own_cluster)
    user = "system:serviceaccount:platform-integrations:integrations-operator"
    # RBAC lets the operator write its ConfigMap in any namespace: only the policies,
    # naming this identity, refuse it in kube-system or its own namespace.
    for namespace in ("kube-system", "platform-integrations"):
        refusal = _refused_as(kube, own_cluster, user, namespace)
        assert "ValidatingAdmissionPolicy 'settings-controller-operator-configmaps'" in refusal, (
            refusal
        )
        assert "reserved namespace" in refusal
    deployment = json.loads(_kubectl(kube, own_cluster, "get", "deployment", "settings-controller",
                                     "-n", "platform-integrations", "-o", "json").stdout)  # fmt: skip
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--connection-check-interval=0" in container["args"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"} in container["env"]
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    _kubectl(kube, own_cluster, "get", "pdb", "settings-controller", "-n", "platform-integrations")
    _clean(kube, helm, own_cluster, "platform-integrations")


def test_documented_install(helm: pathlib.Path, kube: Kube, own_cluster: pathlib.Path) -> None:
    command = _documented("--namespace settings-controller-system --create-namespace")
    assert "STATUS: deployed" in _shell(command, helm, own_cluster)
    refusal = _refused_as(
        kube,
        own_cluster,
        "system:serviceaccount:settings-controller-system:settings-controller",
        "kube-system",
    )
    assert "settings-controller-operator-configmaps" in refusal, refusal
    _shell(_documented("--reuse-values"), helm, own_cluster)
    # deploy/README's `kubectl apply -k deploy/network-policy/`, beside the chart's objects.
    applied = _kubectl(kube, own_cluster, "apply", "-k", str(DEPLOY / "network-policy"),
                       "--dry-run=server")  # fmt: skip
    assert (
        "networkpolicy.networking.k8s.io/settings-controller-allow-metrics-traffic"
        in applied.stdout
    )
    _clean(kube, helm, own_cluster, "settings-controller-system")
