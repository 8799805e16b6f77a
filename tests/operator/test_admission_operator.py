"""The operator's writes stop at what it writes: escalations tried as its own identity.

Issue 10 item 2. RBAC gives the operator ``create`` and ``patch`` on its two
output names (a Secret and a ConfigMap) in every namespace, and ``patch`` on
Namespaces. Before the operator-* policies (deploy/policy/generated.yaml),
creating ``integration-credentials`` in kube-system as a service-account-token
Secret for ``generic-garbage-collector`` was admitted: the token controller
filled in a token that lists every Secret (for
``clusterrole-aggregation-controller``: ``escalate`` on ClusterRoles). Each
attempt below is allowed by RBAC (the refusal names the policy, not RBAC) and
refused by admission, or, for a name that is not an output's, refused by RBAC;
what the operator does write still goes through (tests in this directory, and
the controls here).
"""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from controller.generators import policies
from tests.harness import console
from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import wait_json

pytestmark = pytest.mark.cluster

LABEL_PLAN = f"{support.GROUP}/plan"


@pytest.fixture
def account(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[Any]:
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    wait_json(installed, ("secret", "integration-credentials", "-n", tenant_ns), lambda s: True)
    uid = support.get_json(installed, "account", tenant_ns)["metadata"]["uid"]
    yield tenant_ns, uid
    installed.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


def as_operator(kube: Kube, *args: str, input: str | None = None) -> Any:
    return kube.kubectl(*args, kubeconfig=kube.operator_kubeconfig, input=input, check=False)


def owner(name: str, uid: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{support.GROUP}/v1alpha1",
            "kind": "Account",
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]


def secret(
    namespace: str,
    name: str = "integration-credentials",
    type_: str = "Opaque",
    annotations: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_})


def configmap(namespace: str, name: str, owners: list[dict[str, Any]] | None = None) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owners:
        meta["ownerReferences"] = owners
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}})


def token_trick(namespace: str, service_account: str) -> str:
    return secret(
        namespace,
        type_="kubernetes.io/service-account-token",
        annotations={"kubernetes.io/service-account.name": service_account},
    )


def test_the_operator_cannot_escalate(installed: Kube, account: tuple[str, str]) -> None:
    ns, uid = account
    mine = owner(ns, uid)
    other_ns = f"{ns}-x"
    installed.kubectl("create", "namespace", other_ns)
    creates = {
        "token Secret for generic-garbage-collector in kube-system": token_trick(
            "kube-system", "generic-garbage-collector"
        ),
        "token Secret for clusterrole-aggregation-controller in kube-system": token_trick(
            "kube-system", "clusterrole-aggregation-controller"
        ),
        # In a namespace without the output yet (the type of an existing Secret is immutable:
        # the API server's validation would refuse before the policy is asked).
        "token Secret named as the output": secret(
            other_ns, type_="kubernetes.io/service-account-token", owners=mine,
            annotations={"kubernetes.io/service-account.name": "default"},
        ),
        "Opaque integration-credentials in kube-system": secret("kube-system", owners=mine),
        "Opaque integration-credentials without an owner": secret(other_ns),
        "integration-credentials owned by another account": secret(
            ns, owners=owner("someone-else", uid)
        ),
        "another Secret name in an account's namespace": secret(ns, "db-password", owners=mine),
        "integration-credentials of another type": secret(
            other_ns, type_="example.com/custom", owners=mine
        ),
        "another ConfigMap in an account's namespace": configmap(ns, "other", mine),
        "integration-settings in kube-system": configmap(
            "kube-system", "integration-settings", mine
        ),
        "integration-settings in default": configmap("default", "integration-settings", mine),
        "a Namespace with other labels": json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": f"{ns}-y",
                    "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
                },
            }
        ),
    }  # fmt: skip
    patches = {
        "relabel an account namespace's pod security": (
            "label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged"),
        "annotate an account namespace": (
            "annotate", "namespace", ns, "scheduler.alpha.kubernetes.io/node-selector=x=y"),
        "label kube-system with a plan": ("label", "namespace", "kube-system", f"{LABEL_PLAN}=pro"),
        "label default with an account": (
            "label", "namespace", "default", f"{support.GROUP}/account=x"),
        "drop the owner of the account's ConfigMap": (
            "patch", "configmap", "integration-settings", "-n", ns, "--type=json",
            "-p", '[{"op":"remove","path":"/metadata/ownerReferences"}]'),
    }  # fmt: skip
    # Other names than the outputs' are RBAC's to refuse (it grants create and patch of
    # those names only); the rest pass RBAC and must be the policies' to refuse.
    rbac_refuses = {"another Secret name in an account's namespace",
                    "another ConfigMap in an account's namespace"}  # fmt: skip
    admitted = []
    try:
        for what, manifest in creates.items():
            # As the operator writes: a server-side apply that creates.
            proc = as_operator(installed, "apply", "--server-side", "--force-conflicts",
                               "--field-manager=settings-controller", "-f", "-", input=manifest)  # fmt: skip
            refuser = (
                "cannot patch resource" if what in rbac_refuses else "ValidatingAdmissionPolicy"
            )
            if proc.returncode == 0 or refuser not in proc.stderr:
                admitted.append(f"{what}: {proc.returncode} {proc.stderr.strip()[:300]}")
            if json.loads(manifest)["kind"] != "Namespace":
                # A POST create names nothing RBAC's resourceNames can match: refused there.
                proc = as_operator(installed, "create", "-f", "-", input=manifest)
                if proc.returncode == 0 or "cannot create resource" not in proc.stderr:
                    admitted.append(f"{what} (POST): {proc.returncode} {proc.stderr.strip()[:300]}")
        for what, args in patches.items():
            proc = as_operator(installed, *args)
            if proc.returncode == 0 or "ValidatingAdmissionPolicy" not in proc.stderr:
                admitted.append(f"{what}: {proc.returncode} {proc.stderr.strip()[:300]}")
        assert not admitted, "\n".join(admitted)
        # The token controller never got a Secret to fill in.
        for where in ("kube-system", ns, other_ns):
            got = installed.kubectl(
                "get", "secret", "integration-credentials", "-n", where, "-o", "json", check=False
            )
            if got.returncode == 0:
                assert json.loads(got.stdout)["type"] == "Opaque", where
        gone = installed.kubectl("get", "namespace", f"{ns}-y", check=False)
        assert "NotFound" in gone.stderr
        labels = support.get_json(installed, "namespace", ns)["metadata"]["labels"]
        assert "pod-security.kubernetes.io/enforce" not in labels
    finally:
        installed.kubectl("delete", "namespace", other_ns, f"{ns}-y", "--ignore-not-found",
                          "--wait=false")  # fmt: skip
        installed.kubectl("delete", "secret", "integration-credentials", "-n", "kube-system",
                          "--ignore-not-found")  # fmt: skip


def test_what_the_operator_writes_goes_through(installed: Kube, account: tuple[str, str]) -> None:
    """The controls: the very writes the policies allow, as the operator, succeed."""
    ns, uid = account
    label = as_operator(installed, "label", "namespace", ns, f"{LABEL_PLAN}=pro", "--overwrite")
    assert label.returncode == 0, label.stderr
    cm = support.get_json(installed, "configmap", "integration-settings", "-n", ns)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == uid
    patch = as_operator(
        installed, "patch", "secret", "integration-credentials", "-n", ns, "--type=merge",
        "-p", json.dumps({"metadata": {"labels": {"probe": "ok"}}}),
    )  # fmt: skip
    assert patch.returncode == 0, patch.stderr


def test_the_policies_match_the_operator_only(installed: Kube, namespace: str) -> None:
    """An admin (or any other identity) is not held to the operator's limits."""
    proc = installed.kubectl(
        "create", "-f", "-", input=configmap(namespace, "anything"), check=False
    )
    assert proc.returncode == 0, proc.stderr
    for name in (policies.OPERATOR_SECRETS, policies.OPERATOR_CONFIGMAPS):
        policy = support.get_json(installed, "validatingadmissionpolicy", name)
        conditions = [c["expression"] for c in policy["spec"]["matchConditions"]]
        assert conditions == [policies.MATCHES_OPERATOR]


def test_rbac_refuses_what_the_policies_no_longer_match(installed: Kube, namespace: str) -> None:
    """The operator-* policies match creates, updates and deletes of the operator's own output
    names only, and no Namespace deletion (issue 24: other writers' writes then cost them
    nothing). That is no gap because RBAC refuses the rest before admission: ``create``,
    ``patch`` and ``delete`` of ConfigMaps and Secrets by name only (a POST create names
    nothing RBAC can match, even with the output's own name or a generateName), no
    ``update`` verb, no ``delete`` on Namespaces. Each refusal here must be RBAC's (it
    names the verb), not a policy's, and leave the object as it was."""
    for kind in ("configmap", "secret"):
        installed.kubectl("create", kind, *(["generic"] if kind == "secret" else []), "other",
                          "-n", namespace, "--from-literal=k=v")  # fmt: skip
    output = configmap(namespace, "integration-settings")
    installed.kubectl("create", "-f", "-", input=output)
    attempts = {
        # Server-side apply: a PATCH straight away (``kubectl patch`` would GET first).
        "patch another ConfigMap": (("apply", "--server-side", "-f", "-"), "patch",
            json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "other", "namespace": namespace}, "data": {"k": "x"}})),
        "patch another Secret": (("apply", "--server-side", "-f", "-"), "patch",
            json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "other", "namespace": namespace},
                        "stringData": {"k": "x"}})),
        "server-side apply a new ConfigMap of another name": (("apply", "--server-side",
            "-f", "-"), "patch", configmap(namespace, "applied-elsewhere")),
        "create (POST) a ConfigMap of another name": (("create", "-f", "-"), "create",
            configmap(namespace, "posted-elsewhere")),
        "create (POST) a Secret of another name": (("create", "-f", "-"), "create",
            json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "posted-elsewhere", "namespace": namespace}})),
        "create (POST) a ConfigMap by generateName": (("create", "-f", "-"), "create",
            json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"generateName": "posted-", "namespace": namespace}})),
        "create (POST) its own Secret's name": (("create", "-f", "-"), "create",
            json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "integration-credentials", "namespace": namespace}})),
        "delete another ConfigMap": (("delete", "configmap", "other", "-n", namespace), "delete", None),
        "delete another Secret": (("delete", "secret", "other", "-n", namespace), "delete", None),
        "replace (PUT) its own ConfigMap": (("replace", "-f", "-"), "update", output),
        "delete a namespace": (("delete", "namespace", namespace), "delete", None),
        "replace (PUT) a namespace": (("replace", "-f", "-"), "update", json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
    }  # fmt: skip
    wrong = []
    for what, (args, verb, manifest) in attempts.items():
        proc = as_operator(installed, *args, input=manifest)
        if (
            proc.returncode == 0
            or f"cannot {verb} resource" not in proc.stderr
            or "ValidatingAdmissionPolicy" in proc.stderr
        ):
            wrong.append(f"{what}: {proc.returncode} {proc.stderr.strip()[:300]}")
    assert not wrong, "\n".join(wrong)
    assert support.get_json(installed, "configmap", "other", "-n", namespace)["data"] == {"k": "v"}
    secret_ = support.get_json(installed, "secret", "other", "-n", namespace)
    assert secret_["data"] == {"k": "dg=="}
    assert support.get_json(installed, "namespace", namespace)["status"]["phase"] == "Active"
    for kind, name in (
        ("configmap", "applied-elsewhere"),
        ("configmap", "posted-elsewhere"),
        ("secret", "posted-elsewhere"),
        ("secret", "integration-credentials"),
    ):
        gone = installed.kubectl("get", kind, name, "-n", namespace, check=False)
        assert "NotFound" in gone.stderr, (kind, name)
    names = [
        o["metadata"]["name"]
        for o in support.get_json(installed, "configmaps", "-n", namespace)["items"]
    ]
    assert not [n for n in names if n.startswith("posted-")], names


def test_the_operator_policies_match_narrowly(installed: Kube) -> None:
    """What the API server holds: creates, updates and deletes of the output's name only,
    no Namespace deletion, and the cheap test of the username first."""
    rules = {
        name: support.get_json(installed, "validatingadmissionpolicy", name)["spec"][
            "matchConstraints"
        ]["resourceRules"]
        for name in (policies.OPERATOR_SECRETS, policies.OPERATOR_CONFIGMAPS, policies.OPERATOR_NAMESPACES)
    }  # fmt: skip
    for name, output in (
        (policies.OPERATOR_SECRETS, "integration-credentials"),
        (policies.OPERATOR_CONFIGMAPS, "integration-settings"),
    ):
        assert [(r["operations"], r.get("resourceNames")) for r in rules[name]] == [
            (["CREATE", "UPDATE", "DELETE"], [output]),
        ]
    assert [r["operations"] for r in rules[policies.OPERATOR_NAMESPACES]] == [["CREATE", "UPDATE"]]
    assert policies.MATCHES_OPERATOR.startswith(
        'request.userInfo.username.endsWith(":settings-controller") && '
    )


def test_the_documented_token_trick_is_refused(installed: Kube, tmp_path: pathlib.Path) -> None:
    """deploy/README.md's example, run as shown (its token-trick.yaml is ``token_trick``):
    refused by the Secrets policy with the lines the README shows."""
    readme = support.REPO / "deploy" / "README.md"
    ((command, shown),) = console.console_block(readme, "The attempts `tests/operator/")
    (tmp_path / "token-trick.yaml").write_text(
        token_trick("kube-system", "generic-garbage-collector")
    )
    argv = shlex.split(command.split("#")[0])
    assert argv[:3] == ["kubectl", "--kubeconfig", ".cluster/kubeconfig-operator"], argv
    argv[:3] = [str(installed.kubectl_path), "--kubeconfig", str(installed.operator_kubeconfig)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout
    for line in shown:
        for part in line.split("..."):
            assert part.strip() in done.stderr, (part, done.stderr)
    gone = installed.kubectl(
        "get", "secret", "integration-credentials", "-n", "kube-system", check=False
    )
    assert "NotFound" in gone.stderr
