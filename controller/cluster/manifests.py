"""The objects the operator writes for an account, as server-side apply manifests.

Pure: given the merge result and the platform keys, the manifests. The
reconciler compares their content hash with what the indexes saw and applies
only what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.cluster.runtime import records, secrets
from controller.core import catalog, declarations, merging, rendering


def owner_reference(account: records.Observed) -> dict[str, Any]:
    """The Account owns its outputs: deleting it lets the garbage collector remove them.

    ``blockOwnerDeletion`` stays false, so the operator needs no permission on
    ``accounts/finalizers`` and a down operator never blocks a deletion.
    """
    return {
        "apiVersion": catalog.API_VERSION,
        "kind": catalog.ACCOUNT,
        "name": account.name,
        "uid": account.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def configmap(
    account: records.Observed,
    namespace: str,
    data: Mapping[str, str],
    plan: str,
    digest: str | None = None,
) -> dict[str, Any]:
    """The ConfigMap, labelled with the plan its namespace was labelled with just before
    (``digest``: ``rendering.content_hash(data)``, when the caller has it already)."""
    manifest = rendering.configmap(account.name, namespace, data, digest)
    manifest["metadata"]["labels"][records.LABEL_PLAN] = plan
    manifest["metadata"]["ownerReferences"] = [owner_reference(account)]
    return manifest


def credential_data(
    global_: declarations.GlobalSettings, result: merging.AccountResult, keys: secrets.PlatformKeys
) -> dict[str, str]:
    """``<type>.<slot>`` -> base64 key, for the enabled integrations; missing keys left out,
    and none at all for a plan that does not project keys."""
    data: dict[str, str] = {}
    if not global_.projects_keys(result.account.plan):
        return data
    for integration in result.integrations:
        if not integration.enabled:
            continue
        for slot, ref in global_.integrations[integration.type].credentials.items():
            value = keys.value(ref.secret_name, ref.key)
            if value is not None:
                data[f"{integration.type}.{slot}"] = value
    return dict(sorted(data.items()))


def credentials_secret(
    account: records.Observed, namespace: str, data: Mapping[str, str]
) -> dict[str, Any]:
    # No content-hash annotation here: not even a digest of a key leaves the Secret.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": rendering.CREDENTIALS_SECRET_NAME,
            "namespace": namespace,
            "labels": rendering.labels(account.name),
            "ownerReferences": [owner_reference(account)],
        },
        "type": "Opaque",
        "data": dict(data),
    }


def namespace(account: declarations.Account) -> dict[str, Any]:
    """The account's namespace, labelled with its plan for the admission policy.

    Applied, so it is created when missing; never owned by the Account, so
    deleting an Account never deletes a tenant's namespace.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": account.namespace,
            "labels": {
                records.LABEL_PLAN: account.plan,
                rendering.LABEL_ACCOUNT: account.name,
            },
        },
    }


def in_sync(
    seen: records.Digest | None, digest: str, owner_uid: str, plan: str | None = None
) -> bool:
    """Whether the object as last seen already holds the data whose
    ``rendering.content_hash`` is ``digest`` (and ``plan``) and belongs to the account."""
    return (
        seen is not None
        and seen.managed
        and owner_uid in seen.owners
        and (plan is None or seen.plan == plan)
        and seen.content_hash == digest
    )
