"""Canonical bytes: the effective JSON, the ConfigMap that carries it, and its hash.

Same result, same bytes (merge rule 8), so an unchanged account is never
rewritten: adapters compare ``content_hash`` before they write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from controller.core import catalog

CONFIGMAP_NAME = "integration-settings"
CREDENTIALS_SECRET_NAME = "integration-credentials"

MANAGED_BY = "settings-controller"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ACCOUNT = f"{catalog.GROUP}/account"
# On an account's namespace (read by the admission policy) and on its ConfigMap,
# so that a restarted operator knows the namespace is labelled without a write.
LABEL_PLAN = f"{catalog.GROUP}/plan"
ANNOTATION_HASH = f"{catalog.GROUP}/content-hash"


# ``json.dumps`` with these arguments builds a new encoder per call: one, reused,
# is the same bytes (an encoder keeps no state between calls).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant space, a final newline; NaN is refused, not written.

    Compact rather than indented: json's C encoder only serves the compact
    form, and at 100,000 accounts the pure-Python indenting one dominated.
    """
    return _CANONICAL.encode(value) + "\n"


def content_hash(data: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode())
        digest.update(b"\0")
        digest.update(data[key].encode())
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def labels(account_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ACCOUNT: account_name}


def configmap(
    account_name: str, namespace: str, data: Mapping[str, str], digest: str | None = None
) -> dict[str, Any]:
    """The ConfigMap manifest a workload mounts (``digest``: ``content_hash(data)``, when the
    caller has it already)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "namespace": namespace,
            "labels": labels(account_name),
            "annotations": {ANNOTATION_HASH: digest or content_hash(data)},
        },
        "data": dict(sorted(data.items())),
    }
