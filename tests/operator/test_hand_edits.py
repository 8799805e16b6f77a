"""Breaks of cluster mode's documented promises, on the real API server with the operator
running as its ServiceAccount (tests/operator/support)."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import condition, settings, wait_json

pytestmark = pytest.mark.cluster

MANAGED_BY = "app.kubernetes.io/managed-by"


def _cm(ns: str) -> tuple[str, ...]:
    return ("configmap", "integration-settings", "-n", ns)


def _rendered_account(kube: Kube, ns: str) -> None:
    support.apply_text(kube, support.account_manifest(ns, ns))
    support.apply_text(kube, support.override_manifest(ns, "openai", {"model": "gpt-4o"}))
    wait_json(kube, _cm(ns), lambda cm: settings(cm, "openai")["model"] == "gpt-4o", timeout=60)


def test_a_label_removed_from_the_operators_configmap_is_put_back(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """deploy/README.md:295-298 ("Hand edits and deletions are reverted, whatever their
    shape") and README.md:230-231 ("an object the operator did not create is never adopted").

    Broke: removing the ``app.kubernetes.io/managed-by`` label from the operator's own
    ConfigMap (which still carries its controller ownerReference to this very Account and the
    operator's field manager) turns it into a "foreign" object for good: the Account goes
    ``Ready=False`` ``OutputConflict`` "a ConfigMap ... that the operator did not create", and
    nothing is written there again, so later changes never reach the account
    (cluster/runtime/records.py ``digest`` sets ``managed`` from the label alone and
    cluster/reconciling.py calls the object foreign without looking at its ownerReference uid)."""
    kube = installed
    _rendered_account(kube, tenant_ns)
    kube.kubectl("label", *_cm(tenant_ns), f"{MANAGED_BY}-")
    time.sleep(3)
    support.apply_text(kube, support.override_manifest(tenant_ns, "openai", {"model": "gpt-4.1"}))
    wait_json(
        kube,
        _cm(tenant_ns),
        lambda cm: (
            settings(cm, "openai")["model"] == "gpt-4.1"
            and (cm["metadata"].get("labels") or {}).get(MANAGED_BY) == "settings-controller"
        ),
        timeout=30,
        what="the hand-edited ConfigMap repaired and the new override applied",
    )
    account = support.get_json(kube, "account", tenant_ns)
    assert condition(account)["reason"] != "OutputConflict", condition(account)
    kube.kubectl("delete", "account", tenant_ns, "--wait=false")


def test_a_key_added_to_the_configmap_by_hand_is_removed(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """deploy/README.md:292-298 (outputs are applied "only when their content differs from
    what the operator's watch last saw ... Hand edits and deletions are reverted, whatever
    their shape"); README.md:247-250 (workloads mount the ConfigMap as a directory).

    Broke: a data key added by hand (``kubectl patch cm integration-settings --type merge
    -p '{"data":{"extra.json":...}}'``) stays for good: every workload mounting the
    ConfigMap sees an ``extra.json`` the operator never wrote. The digest of ``.data``
    (cluster/runtime/records.py ``digest``) does change, but the operator's answer is a server-side
    apply, which leaves fields owned by another field manager (``kubectl-patch``) in place;
    only the ``binaryData`` shape triggers the delete-and-rewrite (cluster/reconciling.py)."""
    kube = installed
    _rendered_account(kube, tenant_ns)
    patch = {"data": {"extra.json": json.dumps({"model": "planted"})}}
    kube.kubectl("patch", *_cm(tenant_ns), "--type=merge", "-p", json.dumps(patch))
    wait_json(
        kube,
        _cm(tenant_ns),
        lambda cm: set(cm["data"]) == {"openai.json", "image_generation.json"},
        timeout=30,
        what="the hand-added key removed",
    )
    kube.kubectl("delete", "account", tenant_ns, "--wait=false")
