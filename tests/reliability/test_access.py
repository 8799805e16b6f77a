"""Access: a tenant gets nothing beyond its own overrides; the operator's role is minimal.

Runs on the private control plane with deploy/ installed, the operator running
as its ServiceAccount, and the tenant user (group ``tenants``) bound to
``settings-controller-tenant`` in its own namespaces, as deploy/README.md says.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from controller.generators import policies
from tests.harness.fixtures import Kube
from tests.operator import fixtures as operator_fixtures
from tests.operator import support
from tests.reliability.conftest import Figures
from tests.reliability.private import PrivateCluster

pytestmark = pytest.mark.cluster

PRO, FREE, OTHER = "rel-acc-pro", "rel-acc-free", "rel-acc-other"


def _setup(kube: Kube) -> None:
    for name, plan in ((PRO, "pro"), (FREE, "free"), (OTHER, "pro")):
        support.apply_text(kube, support.account_manifest(name, name, plan))
    for name in (PRO, FREE, OTHER):
        support.wait_json(
            kube, ("configmap", "integration-settings", "-n", name), lambda _: True, 120
        )
    for name in (PRO, FREE):  # the tenant's own namespaces
        kube.kubectl(
            "-n", name, "create", "rolebinding", "tenant-settings",
            "--clusterrole=settings-controller-tenant", "--group=tenants", check=False,
        )  # fmt: skip
    support.wait_json(
        kube,
        ("namespace", FREE),
        lambda ns: ns["metadata"]["labels"].get(f"{support.GROUP}/plan") == "free",
        60,
    )


def _as_tenant(kube: Kube, *args: str, input: str | None = None) -> Any:
    return kube.kubectl(*args, kubeconfig=kube.tenant_kubeconfig, input=input, check=False)


def test_tenant_cannot_escape_its_overrides(
    private: PrivateCluster, operator_factory: Any, figures: Figures
) -> None:
    kube = private.kube
    operator_factory()
    _setup(kube)
    override = support.override_manifest(PRO, "openai", {"model": "gpt-4o"})
    # The positive control: what a tenant may do works (so the denials below mean something).
    support.until(
        lambda: _as_tenant(kube, "apply", "-f", "-", input=override).returncode == 0,
        "the tenant's own override",
        60,
    )
    assert _as_tenant(kube, "-n", PRO, "get", "configmap", "integration-settings").returncode == 0

    plan_patch = json.dumps({"spec": {"plan": "enterprise"}})
    label_patch = json.dumps({"metadata": {"labels": {f"{support.GROUP}/plan": "pro"}}})
    probes: dict[str, tuple[str, ...]] = {
        "get Secret integration-credentials (own ns)": (
            "-n", PRO, "get", "secret", "integration-credentials"),
        "list Secrets (own ns)": ("-n", PRO, "get", "secrets"),
        "list Secrets (all namespaces)": ("get", "secrets", "-A"),
        "get platform keys": (
            "-n", support.OPERATOR_NAMESPACE, "get", "secret", "platform-api-keys"),
        "get the global": ("get", "globalintegrationsettings", "default"),
        "patch the global": (
            "patch", "globalintegrationsettings", "default", "--type=merge",
            "-p", '{"spec":{"plans":{"free":{"allowOverrides":true}}}}'),
        "get its own Account": ("get", "account", PRO),
        "patch its own Account's plan": (
            "patch", "account", FREE, "--type=merge", "-p", plan_patch),
        "relabel its namespace's plan": (
            "patch", "namespace", FREE, "--type=merge", "-p", label_patch),
        "read another account's ConfigMap": (
            "-n", OTHER, "get", "configmap", "integration-settings"),
        "list another account's overrides": ("-n", OTHER, "get", "integrationsettings"),
        "delete another account's override": (
            "-n", OTHER, "delete", "integrationsettings", "openai"),
        "bind itself a role": (
            "-n", PRO, "create", "rolebinding", "x", "--clusterrole=admin", "--group=tenants"),
        "edit its own ConfigMap": (
            "-n", PRO, "patch", "configmap", "integration-settings", "--type=merge",
            "-p", '{"data":{"openai.json":"{}"}}'),
        "write its override's status": (
            "-n", PRO, "patch", "integrationsettings", "openai", "--subresource=status",
            "--type=merge", "-p", '{"status":{"usingGlobal":false}}'),
    }  # fmt: skip
    allowed = []
    for what, args in probes.items():
        proc = _as_tenant(kube, *args)
        if proc.returncode == 0 or "forbidden" not in proc.stderr.lower():
            allowed.append(f"{what}: {proc.returncode} {proc.stderr.strip()[:200]}")
    # Creating overrides in another account's namespace, and in its free-plan namespace.
    other = _as_tenant(
        kube,
        "apply",
        "-f",
        "-",
        input=support.override_manifest(OTHER, "openai", {"model": "gpt-4o"}),
    )
    if other.returncode == 0 or "forbidden" not in other.stderr.lower():
        allowed.append(f"override in another namespace: {other.stderr[:200]}")
    free = _as_tenant(
        kube,
        "apply",
        "-f",
        "-",
        input=support.override_manifest(FREE, "openai", {"model": "gpt-4o"}),
    )
    if free.returncode == 0 or "plan free may not override" not in free.stderr:
        allowed.append(f"override for a free-plan account: {free.stderr[:200]}")
    assert not allowed, "\n".join(allowed)
    # can-i --list: nothing on Secrets, no wildcard, in its own namespace.
    rules = _as_tenant(kube, "-n", PRO, "auth", "can-i", "--list").stdout
    for line in rules.splitlines()[1:]:
        resource = line.split()[0] if line.split() else ""
        assert not resource.startswith("secrets"), line
        assert resource != "*.*", line
    figures["forbidden attempts"] = len(probes) + 2
    figures["allowed (must be 0)"] = len(allowed)


def test_operator_clusterrole_is_the_minimum(figures: Figures) -> None:
    """Every rule of the operator's roles, exactly: anything broader fails this test."""
    docs = [
        d
        for f in ("role.yaml", "namespace_role.yaml")
        for d in yaml.safe_load_all((support.REPO / "deploy" / "rbac" / f).read_text())
        if d and d["kind"] in ("ClusterRole", "Role")
    ]
    granted = set()
    for doc in docs:
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (doc["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = ",".join(rule.get("resourceNames", [])) or "any"
                        granted.add((doc["kind"], group, resource, verb, names))
    g = support.GROUP
    expected = {
        *(("ClusterRole", g, r, v, "any") for r in ("globalintegrationsettings", "accounts", "integrationsettings") for v in ("get", "list", "watch")),
        *(("ClusterRole", g, f"{r}/status", v, "any") for r in ("globalintegrationsettings", "accounts", "integrationsettings") for v in ("get", "patch")),
        # create by name: a server-side apply that creates is authorized with its URL's name
        *(("ClusterRole", "", "configmaps", v, "integration-settings") for v in ("get", "list", "watch", "create", "patch", "delete")),
        *(("ClusterRole", "", "secrets", v, "integration-credentials") for v in ("get", "list", "watch", "create", "patch", "delete")),
        *(("ClusterRole", "", "namespaces", v, "any") for v in ("get", "list", "watch", "create", "patch")),
        ("ClusterRole", "", "events", "create", "any"),
        ("ClusterRole", "", "events", "patch", "any"),  # the count of a repeated Event
        *(("ClusterRole", "apiextensions.k8s.io", "customresourcedefinitions", v, "any") for v in ("get", "list", "watch")),
        *(("Role", "", "secrets", v, "any") for v in ("get", "list", "watch")),
        *(("Role", "coordination.k8s.io", "leases", v, "settings-controller") for v in ("get", "update")),
        ("Role", "coordination.k8s.io", "leases", "create", "any"),
    }  # fmt: skip
    assert granted == expected, {
        "broader than expected": sorted(granted - expected),
        "missing": sorted(expected - granted),
    }
    # Never: delete anything but its own two outputs by name, update (PUT)
    # anything but the leader Lease by name in the operator's namespace, read
    # Secrets cluster-wide.
    assert not [
        p
        for p in granted
        if p[3] in ("delete", "deletecollection", "update", "escalate", "bind", "impersonate")
        and p
        not in (
            ("Role", "coordination.k8s.io", "leases", "update", "settings-controller"),
            ("ClusterRole", "", "configmaps", "delete", "integration-settings"),
            ("ClusterRole", "", "secrets", "delete", "integration-credentials"),
        )
    ]
    assert ("ClusterRole", "", "secrets", "get", "any") not in granted
    figures["permissions (kind, group, resource, verb, names)"] = len(granted)
    figures["wildcards"] = 0


def test_credential_secrets_live_only_in_account_namespaces(
    private: PrivateCluster, operator_factory: Any, figures: Figures
) -> None:
    kube = private.kube
    operator_factory()
    _setup(kube)
    accounts = json.loads(kube.kubectl("get", "accounts", "-o", "json").stdout)["items"]
    account_namespaces = {a["spec"]["namespace"] for a in accounts}
    values = set(operator_fixtures.KEYS.values())
    holders = []
    for secret in json.loads(kube.kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]:
        meta = secret["metadata"]
        data = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (secret.get("data") or {}).items()
        }
        text = json.dumps(meta)
        assert not any(v in text for v in values), (
            f"a key in the metadata of {meta['namespace']}/{meta['name']}"
        )
        if values & set(data.values()):
            holders.append((meta["namespace"], meta["name"]))
    for namespace, name in holders:
        if name == "platform-api-keys":
            assert namespace == support.OPERATOR_NAMESPACE
        else:
            assert name == "integration-credentials" and namespace in account_namespaces, (
                namespace,
                name,
            )
    for ns in (PRO, FREE, OTHER):
        assert (ns, "integration-credentials") in holders
    figures["Secrets holding a platform key"] = len(holders)
    figures["outside the operator's or an account's namespace"] = 0


def test_every_write_rbac_cannot_name_is_bounded_by_a_policy(figures: Figures) -> None:
    """RBAC grants ``create`` and ``patch`` on Namespaces without names: each such grant
    must be matched, for every operation it allows and for every name (a rule without
    ``resourceNames``), by a generated policy bound to the operator's identity
    (tests/operator/test_admission_operator.py tries them). Grants limited to names (the
    outputs: ``create``, ``patch``, ``delete``) must be matched for those names and
    operations: the names are RBAC's to bound (test_rbac_refuses_what_the_policies_no_
    longer_match), the namespaces they are written in the policies'."""
    operations = {"create": "CREATE", "patch": "UPDATE", "update": "UPDATE", "delete": "DELETE"}
    role = next(
        d
        for d in yaml.safe_load_all((support.REPO / "deploy" / "rbac" / "role.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    )
    unnamed: dict[str, set[str]] = {}
    named: dict[tuple[str, str], set[str]] = {}  # (resource, name) -> operations
    for rule in role["rules"]:
        if rule["apiGroups"] != [""]:
            continue
        for resource in rule["resources"]:
            ops = {operations[v] for v in rule["verbs"] if v in operations}
            if not ops or resource == "events":
                continue
            for name in rule.get("resourceNames", ()):
                named.setdefault((resource, name), set()).update(ops)
            if not rule.get("resourceNames"):
                unnamed.setdefault(resource, set()).update(ops)
    generated = [
        d
        for d in yaml.safe_load_all(
            (support.REPO / "deploy" / "policy" / "generated.yaml").read_text()
        )
        if d and d["kind"] == "ValidatingAdmissionPolicy"
    ]
    bounded: dict[str, set[str]] = {}
    bounded_named: dict[tuple[str, str], set[str]] = {}
    for policy in generated:
        if policies.MATCHES_OPERATOR not in [
            c["expression"] for c in policy["spec"].get("matchConditions", [])
        ]:
            continue
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames", ()):
                    bounded_named.setdefault((resource, name), set()).update(rule["operations"])
                if not rule.get("resourceNames"):
                    bounded.setdefault(resource, set()).update(rule["operations"])
    assert unnamed == {"namespaces": {"CREATE", "UPDATE"}}
    assert named == {
        ("configmaps", "integration-settings"): {"CREATE", "UPDATE", "DELETE"},
        ("secrets", "integration-credentials"): {"CREATE", "UPDATE", "DELETE"},
    }
    unbounded = {r: ops - bounded.get(r, set()) for r, ops in unnamed.items()}
    assert not any(unbounded.values()), unbounded
    unbounded_named = {
        k: ops - bounded_named.get(k, set()) - bounded.get(k[0], set()) for k, ops in named.items()
    }
    assert not any(unbounded_named.values()), unbounded_named
    figures["unnamed write grants"] = len(unnamed)
    figures["bounded by an operator policy"] = sum(
        1 for r, ops in unnamed.items() if ops <= bounded.get(r, set())
    )
