"""A hostile tenant against the running operator: it must keep serving everyone else.

Reproductions of issue 10, items 1 and 3, on the real control plane. The
objects are created as a cluster would store them without the admission
policies (which refuse them first where installed).
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import GROUP, settings, wait_json

pytestmark = pytest.mark.cluster

API = f"/apis/{GROUP}/v1alpha1"


def nested(levels: int) -> object:
    node: object = 1
    for _ in range(levels):
        node = {"a": node}
    return node


def raw_override(namespace: str, name: str, overrides: object) -> str:
    # json.dumps of 1,200 levels recurses too: build the text by hand.
    text = json.dumps(overrides) if not isinstance(overrides, str) else overrides
    head = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "IntegrationSettings"}
    meta = json.dumps({"name": name, "namespace": namespace})
    return (
        json.dumps(head)[:-1]
        + f', "metadata": {meta}, "spec": {{"isActive": true, "overrides": {text}}}}}'
    )


@pytest.fixture
def bystander(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[str]:
    """Another tenant's account, whose changes must keep propagating."""
    name = f"{tenant_ns[:50]}-by"
    support.apply_text(installed, support.account_manifest(name, name))
    wait_json(installed, ("configmap", "integration-settings", "-n", name), lambda cm: True)
    yield name
    installed.kubectl("delete", "account", name, "--wait=false")


def _ready_of_deep(kube: Kube, namespace: str, timeout: float = 30.0) -> dict[str, str]:
    """The Ready condition of an object the test's own JSON decoder cannot read whole."""
    deadline = time.monotonic() + timeout
    jsonpath = '{.status.conditions[?(@.type=="Ready")]}'
    while True:
        proc = kube.kubectl(
            "get", "integrationsettings", "openai", "-n", namespace, "-o", f"jsonpath={jsonpath}",
            check=False,
        )  # fmt: skip
        if proc.returncode == 0 and proc.stdout.strip():
            ready: dict[str, str] = json.loads(proc.stdout)
            return ready
        if time.monotonic() > deadline:
            raise AssertionError(f"no Ready condition on the deep object after {timeout}s")
        time.sleep(0.3)


def _refused(kube: Kube, namespace: str) -> bool:
    """Whether the API server (its policy cache, not just etcd) refuses an unknown field now."""
    probe = support.override_manifest(namespace, "openai", {"deep": 1})
    proc = kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe, check=False)
    return "ValidatingAdmissionPolicy" in proc.stderr


def _without_policies(kube: Kube, namespace: str) -> list[str]:
    """Remove the admission policy bindings for this test (a cluster without them).

    A deleted binding keeps refusing until the API server's policy cache drops it
    (the generated overrides policy refuses this test's object), so wait for that.
    """
    proc = kube.kubectl(
        "get", "validatingadmissionpolicybindings", "-l",
        "app.kubernetes.io/name=settings-controller", "-o", "name", check=False,
    )  # fmt: skip
    names = proc.stdout.split()
    for name in names:
        kube.kubectl("delete", name)
    support.until(lambda: not _refused(kube, namespace), "admission policies off", 60)
    return names


@pytest.mark.parametrize("levels", [600, 1200])
def test_a_deeply_nested_override_is_reported_and_everyone_else_served(
    installed: Kube,
    operator: support.Operator,
    tenant_ns: str,
    bystander: str,
    tmp_path: pathlib.Path,
    levels: int,
) -> None:
    """Was: at 1,200 levels kopf's list and watch raised RecursionError and the operator
    crash-looped; at 600 the indexer failed silently and the status said "applied"."""
    kube = installed
    removed = _without_policies(kube, tenant_ns)
    try:
        support.apply_text(kube, support.account_manifest(tenant_ns, tenant_ns))
        deep = '{"deep": ' + '{"a": ' * levels + "1" + "}" * levels + "}"
        body = tmp_path / "deep.json"
        body.write_text(raw_override(tenant_ns, "openai", deep))
        deadline = time.monotonic() + 20  # the API server's policy cache lags the deletion
        while True:
            proc = kube.kubectl(
                "create", "--raw", f"{API}/namespaces/{tenant_ns}/integrationsettings",
                "-f", str(body), check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the API server did not store the object: {proc.stderr[:300]}")
            time.sleep(0.5)
        restarts = operator.proc.pid if operator.proc else None
        ready = _ready_of_deep(kube, tenant_ns)
        assert ready["status"] == "False", ready
        assert "nested more than 32 levels deep" in ready["message"]
        # The operator is the same process, still healthy, and still serving others.
        assert operator.proc is not None and operator.proc.poll() is None
        assert operator.proc.pid == restarts and operator.healthy()
        support.apply_text(
            kube, support.override_manifest(bystander, "openai", {"model": "gpt-4.1"})
        )
        wait_json(
            kube,
            ("configmap", "integration-settings", "-n", bystander),
            lambda cm: settings(cm, "openai")["model"] == "gpt-4.1",
            timeout=30,
            what="another account's change propagated",
        )
        # And after a restart the initial list does not fail either. Without the
        # policies the operator is unconfined: it starts only when told so.
        operator.stop()
        operator.proc = None
        args = operator.args
        operator.args = (*args, "--allow-unconfined")
        try:
            operator.start()
        finally:
            operator.args = args
        # Judged again for POLICY_GRACE seconds first (policies just applied take a moment).
        support.until(lambda: "NOT confined" in operator.log_text(), "the unconfined verdict", 45)
        kube.kubectl(
            "patch", "account", bystander, "--type=merge", "-p", '{"spec": {"plan": "free"}}'
        )
        wait_json(
            kube,
            ("configmap", "integration-settings", "-n", bystander),
            lambda cm: settings(cm, "openai")["using_global"] is True,
            timeout=60,
            what="a plan downgrade propagated after the restart",
        )
        assert "RecursionError" not in operator.log_text()
    finally:
        _restore(kube, tenant_ns, removed)


def _restore(kube: Kube, namespace: str, removed: list[str]) -> None:
    """Remove the test's objects, and put the admission policies back if it removed them."""
    kube.kubectl("delete", "integrationsettings", "openai", "-n", namespace, "--ignore-not-found")
    kube.kubectl("delete", "account", namespace, "--wait=false", "--ignore-not-found")
    if removed:
        kube.kubectl(
            "apply", "-k", str(support.REPO / "deploy"), "--server-side", "--force-conflicts"
        )
        support.until(lambda: _refused(kube, namespace), "admission policies back on", 60)


def _rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_churn_of_objects_leaves_no_memory_behind(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """Was: ~29 KiB per create/delete cycle of an override with 400 unknown fields, never
    returned (the Warning de-duplication was keyed by uid and never pruned)."""
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.generic_resource import create_namespaced_resource

    kube = installed
    removed = _without_policies(kube, tenant_ns)
    resource = create_namespaced_resource(
        GROUP, "v1alpha1", "IntegrationSettings", "integrationsettings"
    )
    client = Client(KubeConfig.from_file(kube.kubeconfig), field_manager="churn-test")
    try:
        support.apply_text(kube, support.account_manifest(tenant_ns, tenant_ns))
        wait_json(kube, ("configmap", "integration-settings", "-n", tenant_ns), lambda cm: True)
        overrides = {f"unknown_field_{i:03d}_{'x' * 20}": i for i in range(400)}

        def cycle() -> None:
            obj = resource.from_dict(
                {
                    "apiVersion": f"{GROUP}/v1alpha1",
                    "kind": "IntegrationSettings",
                    "metadata": {"name": "openai", "namespace": tenant_ns},
                    "spec": {"isActive": True, "overrides": overrides},
                }
            )
            client.create(obj)
            time.sleep(0.05)  # long enough for the operator to report on it
            client.delete(resource, "openai", namespace=tenant_ns)

        deadline = time.monotonic() + 20  # the API server's policy cache lags the deletion
        while True:
            try:
                cycle()
                break
            except ApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert operator.proc is not None
        pid = operator.proc.pid
        for _ in range(50):  # warm up: caches, interned strings, allocator arenas
            cycle()
        time.sleep(5)
        before = _rss_kib(pid)
        cycles = 300
        for _ in range(cycles):
            cycle()
        time.sleep(8)
        after = _rss_kib(pid)
        grown = after - before
        # 29 KiB a cycle before the fix: 8.5 MiB over 300 cycles.
        assert grown < 3 * 1024, f"RSS grew {grown} KiB over {cycles} cycles"
    finally:
        client.close()
        _restore(kube, tenant_ns, removed)
