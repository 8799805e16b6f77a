"""The operator is confined whatever namespace it is installed in, and knows it (issue 20,
break 6).

Installed in another namespace (a kustomize ``namespace:`` overlay, a Helm
release namespace), the ``settings-controller-operator-*`` policies named
``system:serviceaccount:settings-controller-system:settings-controller``, matched
nobody, and the operator could write anywhere, silently. Now they match the
ServiceAccount in any namespace (``policies.MATCHES_OPERATOR``), and the operator
proves at start-up, with dry-run writes the policies must refuse, that they hold
it: a log line, ``settings_controller_confined`` and an Event; unconfined, it
refuses to start unless told ``--allow-unconfined``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import secrets
import subprocess
from typing import Any

import pytest
import yaml

from controller.cluster import hosting
from controller.generators import policies
from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

OPERATOR_POLICIES = (
    policies.OPERATOR_SECRETS,
    policies.OPERATOR_CONFIGMAPS,
    policies.OPERATOR_NAMESPACES,
)


def _kustomize(kube: Kube, directory: pathlib.Path) -> list[dict[str, Any]]:
    out = kube.kubectl("kustomize", str(directory)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _overlay(tmp_path: pathlib.Path, namespace: str) -> pathlib.Path:
    """What a user writes to install deploy/ elsewhere: only ``namespace:``."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(support.REPO / "deploy", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {namespace}\nresources:\n- {base}\n"
    )
    return overlay


def _as(identity: str) -> tuple[str, ...]:
    return (
        f"--as={identity}",
        "--as-group=system:serviceaccounts",
        "--as-group=system:authenticated",
    )


def _configmap(namespace: str, name: str = "planted") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
        }
    )


def test_an_overlay_in_another_namespace_keeps_the_operator_confined(
    installed: Kube, tmp_path: pathlib.Path
) -> None:
    other = f"other-ns-{secrets.token_hex(3)}"
    objects = _kustomize(installed, _overlay(tmp_path, other))
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert account["metadata"]["namespace"] == other
    # The operator policies are the same objects whatever the namespace: nothing in
    # them names the namespace the install went to.
    base = {
        (o["kind"], o["metadata"]["name"]): o
        for o in _kustomize(installed, support.REPO / "deploy")
        if o["kind"].startswith("ValidatingAdmissionPolicy")
    }
    overlay_policies = [
        o
        for o in objects
        if o["kind"].startswith("ValidatingAdmissionPolicy")
        and o["metadata"]["name"] in OPERATOR_POLICIES
    ]
    assert len(overlay_policies) == 6
    for o in overlay_policies:
        # (kustomize gives these cluster-scoped objects a metadata.namespace, which the
        # API server ignores: only the spec is compared.)
        assert o["spec"] == base[(o["kind"], o["metadata"]["name"])]["spec"]
        assert other not in json.dumps(o["spec"])

    # Applied as the overlay renders them (renamed, beside the session's install),
    # with the overlay's ClusterRoleBinding: RBAC lets the identity in `other`
    # write its outputs in any namespace; the policies must refuse the wrong ones.
    suffix = f"-{other}"
    applied = []
    for o in objects:
        if (
            o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "settings-controller"
        ) or o in overlay_policies:
            applied.append(o)
    for o in applied:
        o["metadata"]["name"] += suffix
        if o["kind"] == "ValidatingAdmissionPolicyBinding":
            o["spec"]["policyName"] += suffix
    stream = "\n---\n".join(json.dumps(o) for o in applied)
    installed.kubectl("create", "namespace", other)
    installed.kubectl("apply", "--server-side", "-f", "-", input=stream)
    identity = f"system:serviceaccount:{other}:settings-controller"
    try:
        # RBAC allows it (the overlay's binding took effect) ...
        support.until(
            lambda: installed.kubectl(
                "auth", "can-i", "create", "configmaps/integration-settings", "-n", "kube-system",
                *_as(identity),
                check=False,
            ).stdout.strip() == "yes",
            "the overlay's ClusterRoleBinding in effect",
        )  # fmt: skip
        # ... and the policies refuse its outputs in kube-system and in its own namespace
        # (as it writes them: server-side apply).
        apply = ("apply", "--server-side", "--field-manager=settings-controller", *_as(identity))
        for namespace in ("kube-system", other):
            proc = installed.kubectl(
                *apply, "-f", "-", input=_configmap(namespace, "integration-settings"), check=False
            )
            assert proc.returncode != 0, f"admitted in {namespace}: {proc.stdout}"
            assert f"ValidatingAdmissionPolicy '{policies.OPERATOR_CONFIGMAPS}" in proc.stderr
        token_trick = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "integration-credentials", "namespace": "kube-system"},
                "type": "Opaque",
            }
        )
        proc = installed.kubectl(*apply, "-f", "-", input=token_trick, check=False)
        assert f"ValidatingAdmissionPolicy '{policies.OPERATOR_SECRETS}" in proc.stderr
    finally:
        for o in applied:
            installed.kubectl(
                "delete", o["kind"], o["metadata"]["name"], "--ignore-not-found", check=False
            )
        installed.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_the_operator_says_it_is_confined(
    installed: Kube, operator: support.Operator, tmp_path: pathlib.Path
) -> None:
    """As deploy/ installs it: confined, said three ways. (A fresh process, a standby
    beside the session's operator, whatever earlier tests did to that one.)"""
    fresh = support.Operator(installed, tmp_path / "confined.log")
    fresh.start()
    try:
        # /healthz answers before the check has run (the probes are served from the start,
        # so a stalled check shows as not ready): wait for its line.
        line = f"confined: as {policies.OPERATOR_USER}, the API server refused 3 of 3 writes"
        support.until(lambda: line in fresh.log_text(), "the confinement line", timeout=60)
        # The metric is set just after the line is written.
        support.until(lambda: "settings_controller_confined 1.0" in fresh.metrics(), "the metric")
    finally:
        assert fresh.stop() == 0, fresh.log_tail()
    events = support.get_json(
        installed,
        "events",
        "-n",
        support.OPERATOR_NAMESPACE,
        "--field-selector",
        "involvedObject.kind=ServiceAccount,involvedObject.name=settings-controller,reason=Confined",
    )["items"]
    assert events and events[0]["type"] == "Normal"
    # The probes were dry runs: nothing was left behind.
    for kind, name in (
        ("configmap", "integration-settings"),
        ("secret", "integration-credentials"),
    ):
        proc = installed.kubectl("get", kind, name, "-n", "kube-system", check=False)
        assert "NotFound" in proc.stderr
    proc = installed.kubectl(
        "get", "namespace", "settings-controller-confinement-probe", check=False
    )
    assert "NotFound" in proc.stderr


def _run_operator(kube: Kube, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [
            str(support.CLI),
            "operator",
            f"--kubeconfig={kube.kubeconfig}",  # the admin: no operator policy holds it
            f"--namespace={support.OPERATOR_NAMESPACE}",
            "--health-probe-bind-address=0",
            "--metrics-bind-address=0",
            "--verify-interval=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_an_unconfined_operator_refuses_to_start(installed: Kube) -> None:
    done = _run_operator(installed)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, done.stderr[-2000:]
    assert (
        "NOT confined" in lines[0] and "a ConfigMap create in kube-system was admitted" in lines[0]
    )
    assert "--allow-unconfined" in lines[0]
    assert "Traceback" not in done.stderr
    # Nothing was written by the probes, which were admitted.
    proc = installed.kubectl(
        "get", "configmap", "integration-settings", "-n", "kube-system", check=False
    )
    assert "NotFound" in proc.stderr
    events = support.get_json(
        installed, "events", "-n", "default", "--field-selector", "reason=Unconfined"
    )["items"]
    assert events and all(e["type"] == "Warning" for e in events)


def test_allow_unconfined_starts_it_and_says_so(
    installed: Kube, operator: support.Operator, tmp_path: pathlib.Path
) -> None:
    """Told ``--allow-unconfined``: it starts (a standby beside the session's operator),
    with ``settings_controller_confined 0`` and a warning."""
    kube = dataclasses.replace(installed, operator_kubeconfig=installed.kubeconfig)
    other = support.Operator(
        kube, tmp_path / "unconfined.log", ("--verify-interval=0", "--allow-unconfined")
    )
    other.start()
    try:
        # A forbidden write admitted is judged again for POLICY_GRACE seconds first (policies
        # applied a moment ago are enforced within seconds).
        support.until(
            lambda: "NOT confined" in other.log_text(),
            "the unconfined verdict",
            timeout=hosting.POLICY_GRACE + 30,
        )
        assert "settings_controller_confined 0.0" in other.metrics()
    finally:
        assert other.stop() == 0, other.log_tail()
