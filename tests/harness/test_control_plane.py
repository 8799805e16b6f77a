"""The local control plane behaves like a real cluster where envtest does not.

Each test proves one thing a real kube-apiserver + kube-controller-manager
does: CEL validation of a CRD, garbage collection, namespace deletion, RBAC,
ValidatingAdmissionPolicy, watch latency and the operator's identity.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.harness import controlplane as cp
from tests.harness.fixtures import Kube, KubectlError, kubectl_env, until

pytestmark = pytest.mark.cluster

GROUP = "harness.settings-controller.test"
CRD_NAME = f"widgets.{GROUP}"
T = TypeVar("T")


def eventually(
    fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.25, what: str = ""
) -> T:
    """Call fn until it returns without AssertionError/KubectlError, or time out
    (polled by ``fixtures.until``); its value, else the last error with the timeout's."""
    outcome: dict[str, Any] = {}

    def attempt() -> bool:
        try:
            outcome["value"] = fn()
        except (AssertionError, KubectlError) as e:
            outcome["error"] = e
            return False
        return True

    try:
        until(attempt, what, timeout, interval)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}\n{outcome['error']}") from outcome["error"]
    value: T = outcome["value"]
    return value


def apply(kube: Kube, obj: dict[str, Any], **kw: Any) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("apply", "-f", "-", input=json.dumps(obj), **kw)


def get_json(kube: Kube, *args: str, **kw: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kube.kubectl("get", *args, "-o", "json", **kw).stdout)
    return result


def forbidden(res: subprocess.CompletedProcess[str]) -> bool:
    """kubectl failed because RBAC said no."""
    return res.returncode != 0 and "forbidden" in res.stderr.lower()


def widget_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "listKind": "WidgetList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["min", "max"],
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "spec.min must not exceed spec.max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(name: str, namespace: str, lo: int = 1, hi: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"min": lo, "max": hi},
    }


@pytest.fixture(scope="session")
def crd(kube: Kube) -> str:
    """The Widget CRD, established and visible in discovery."""
    apply(kube, widget_crd())
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")

    def discovered() -> None:
        out = kube.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name").stdout
        assert CRD_NAME in out.split(), out

    eventually(discovered, what="Widget in discovery")
    return CRD_NAME


def test_kubectl_is_the_harness_build(kube: Kube) -> None:
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    client = out["clientVersion"]["gitVersion"]
    server = out["serverVersion"]["gitVersion"]
    assert client.startswith("v1."), out
    assert server.startswith("v1."), out


def test_crd_cel_validation_rejects_with_rule_message(kube: Kube, crd: str, namespace: str) -> None:
    eventually(lambda: apply(kube, widget("ok", namespace, 1, 5)), what="valid Widget applies")

    bad = apply(kube, widget("bad", namespace, 9, 3), check=False)
    assert bad.returncode != 0, bad.stdout
    assert "spec.min must not exceed spec.max" in bad.stderr, bad.stderr
    assert "Invalid" in bad.stderr, bad.stderr
    names = kube.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == [f"widget.{GROUP}/ok"]


def test_garbage_collector_deletes_dependents_of_deleted_owner(
    kube: Kube, crd: str, namespace: str
) -> None:
    def create_owner() -> dict[str, Any]:
        apply(kube, widget("owner", namespace))
        return get_json(kube, "widget", "owner", "-n", namespace)

    owner = eventually(create_owner, what="owner Widget created")
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/v1",
                    "kind": "Widget",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "data": {"k": "v"},
    }
    apply(kube, dependent)
    # An unrelated ConfigMap must survive.
    kube.kubectl("create", "configmap", "bystander", "-n", namespace, "--from-literal=k=v")

    kube.kubectl("delete", "widget", "owner", "-n", namespace, "--wait=true", "--timeout=60s")

    def collected() -> None:
        got = kube.kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr, got.stdout + got.stderr

    # The garbage collector rediscovers resource types every 30s, so a CRD
    # created moments ago may take up to that long to be watched.
    eventually(collected, timeout=120.0, interval=1.0, what="dependent garbage-collected")
    kube.kubectl("get", "configmap", "bystander", "-n", namespace)


def test_namespace_deletion_removes_everything(kube: Kube, crd: str) -> None:
    name = f"t-nsdel-{int(time.time() * 1000) % 10**9}"
    kube.kubectl("create", "namespace", name)
    try:
        kube.kubectl("create", "configmap", "cm", "-n", name, "--from-literal=a=b")
        kube.kubectl("create", "secret", "generic", "s", "-n", name, "--from-literal=a=b")
        kube.kubectl("create", "serviceaccount", "robot", "-n", name)
        eventually(lambda: apply(kube, widget("w", name)), what="Widget in namespace")

        kube.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", timeout=150)

        gone = kube.kubectl("get", "namespace", name, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout + gone.stderr
        # Nothing of it is left anywhere.
        for kind in ("configmaps", "secrets", "serviceaccounts", "widgets"):
            left = kube.kubectl("get", kind, "-n", name, "-o", "name").stdout.strip()
            assert left == "", f"{kind} left in deleted namespace: {left}"
    finally:
        kube.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def test_rbac_tenant_only_gets_what_it_is_granted(kube: Kube, namespace: str) -> None:
    tenant = {"kubeconfig": kube.tenant_kubeconfig}
    denied = kube.kubectl("get", "configmaps", "-n", namespace, check=False, **tenant)
    assert forbidden(denied), denied.stderr

    apply(
        kube,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "tenant-configmaps", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"],
                }
            ],
        },
    )
    apply(
        kube,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "tenant-configmaps", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "tenant-configmaps",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": cp.TENANT_USER}
            ],
        },
    )
    eventually(
        lambda: kube.kubectl(
            "create", "configmap", "mine", "-n", namespace, "--from-literal=a=b", **tenant
        ),
        what="tenant may create a ConfigMap",
    )
    assert kube.kubectl("get", "configmap", "mine", "-n", namespace, **tenant).returncode == 0

    secret_list = kube.kubectl("get", "secrets", "-n", namespace, check=False, **tenant)
    assert forbidden(secret_list), secret_list.stdout + secret_list.stderr
    assert 'cannot list resource "secrets"' in secret_list.stderr, secret_list.stderr

    for other in ("default", "kube-system"):
        res = kube.kubectl("get", "configmaps", "-n", other, check=False, **tenant)
        assert forbidden(res), (other, res.stderr)
        res = kube.kubectl(
            "create",
            "configmap",
            "intruder",
            "-n",
            other,
            "--from-literal=a=b",
            check=False,
            **tenant,
        )
        assert forbidden(res), (other, res.stderr)

    whoami = json.loads(kube.kubectl("auth", "whoami", "-o", "json", **tenant).stdout)
    user = whoami["status"]["userInfo"]
    assert user["username"] == cp.TENANT_USER
    assert "tenants" in user["groups"]


@pytest.fixture
def deny_policy(kube: Kube, namespace: str) -> Iterator[str]:
    name = f"deny-forbidden-key-{namespace}"
    yield name
    for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
        kube.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def test_validating_admission_policy_rejects_matching_object(
    kube: Kube, namespace: str, deny_policy: str
) -> None:
    message = "ConfigMaps here may not carry the key 'forbidden'"
    apply(
        kube,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": deny_policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.data) || !('forbidden' in object.data)",
                        "message": message,
                    }
                ],
            },
        },
    )
    apply(
        kube,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": deny_policy},
            "spec": {
                "policyName": deny_policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    )

    def rejected() -> subprocess.CompletedProcess[str]:
        res = kube.kubectl(
            "create", "configmap", "bad", "-n", namespace, "--from-literal=forbidden=1", check=False
        )
        if res.returncode == 0:
            # The policy was not active yet: remove and try again.
            kube.kubectl("delete", "configmap", "bad", "-n", namespace)
        assert res.returncode != 0, "ConfigMap with a forbidden key was admitted"
        return res

    res = eventually(rejected, what="policy rejects the ConfigMap")
    assert message in res.stderr, res.stderr
    assert f"ValidatingAdmissionPolicy '{deny_policy}'" in res.stderr, res.stderr

    # An object that does not match the rule is admitted.
    kube.kubectl("create", "configmap", "good", "-n", namespace, "--from-literal=fine=1")

    # The policy's status controller (kube-controller-manager) type-checked it.
    def type_checked() -> None:
        status = get_json(kube, "validatingadmissionpolicy", deny_policy).get("status", {})
        assert "typeChecking" in status, status

    eventually(type_checked, what="policy status written by the controller-manager")


def test_watch_delivers_update_within_one_second(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "configmap", "watched", "-n", namespace, "--from-literal=value=0")
    proc = subprocess.Popen(
        [
            str(kube.kubectl_path),
            f"--kubeconfig={kube.kubeconfig}",
            "get",
            "configmap",
            "watched",
            "-n",
            namespace,
            "--watch",
            "-o",
            "jsonpath={.data.value}{'\\n'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kubectl_env(),
    )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.monotonic(), line.strip()))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        # The initial state arrives first: the watch is then established.
        _, first = lines.get(timeout=30)
        assert first == "0"
        t0 = time.monotonic()
        kube.kubectl(
            "patch", "configmap", "watched", "-n", namespace, "-p", '{"data":{"value":"1"}}'
        )
        t1 = time.monotonic()
        seen_at, value = lines.get(timeout=10)
        assert value == "1"
        delay_after_ack = seen_at - t1
        assert delay_after_ack < 1.0, (
            f"update seen {delay_after_ack:.3f}s after the patch returned "
            f"({seen_at - t0:.3f}s after it started)"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        thread.join(timeout=5)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_operator_kubeconfig_is_the_serviceaccount(kube: Kube, namespace: str) -> None:
    operator = {"kubeconfig": kube.operator_kubeconfig}
    whoami = json.loads(kube.kubectl("auth", "whoami", "-o", "json", **operator).stdout)
    user = whoami["status"]["userInfo"]
    assert user["username"] == cp.OPERATOR_USER
    for group in cp.OPERATOR_GROUPS:
        assert group in user["groups"], user

    def can_i() -> str:
        res = kube.kubectl(
            "auth", "can-i", "update", "serviceaccounts", "-n", namespace, check=False, **operator
        )
        return res.stdout.strip()

    assert can_i() == "no"
    kube.kubectl(
        "create",
        "rolebinding",
        "operator-edit",
        "-n",
        namespace,
        "--clusterrole=edit",
        f"--serviceaccount={cp.OPERATOR_NAMESPACE}:{cp.OPERATOR_SERVICEACCOUNT}",
    )

    def allowed() -> None:
        assert can_i() == "yes"

    eventually(allowed, what="operator may update serviceaccounts after the RoleBinding")
    # A ServiceAccount, not a ConfigMap: once deploy/ is installed, the operator's own
    # admission policies refuse every ConfigMap but integration-settings.
    kube.kubectl("create", "serviceaccount", "effective", "-n", namespace, **operator)
    denied = kube.kubectl("get", "configmaps", "-n", "default", check=False, **operator)
    assert forbidden(denied), denied.stderr
