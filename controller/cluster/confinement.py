"""Whether the operator is confined, proven at start-up by asking the API server itself.

RBAC lets the operator write its two outputs (the ConfigMap
``integration-settings``, the Secret ``integration-credentials``) in any
namespace and label any namespace; only the ``settings-controller-operator-*``
admission policies hold it to its tenants' namespaces and to its own labels
(deploy/README.md, "What the operator can write, where"). They match its
identity, and an install under another identity (another namespace, another
ServiceAccount name) left it unconfined without a word.

The proof is three server-side applies the policies must refuse and RBAC
allows, sent with ``dryRun=All`` (admission runs in full, nothing is stored):
the two outputs in ``kube-system``, and a Namespace carrying a label the
operator never sets. Each must come back 403 Forbidden. (Objects of other
names would prove nothing: RBAC refuses them before any policy looks.) This is sounder than reading the policies
and bindings and matching their CEL against our username: it tests what the
API server enforces (the policy, its binding, its match condition and the
validation, as compiled and cached), needs no read permission on admission
objects, and cannot be fooled by a policy that exists but does not match, is
bound in ``Warn``/``Audit`` mode, or fails to compile. A SelfSubjectReview
(authentication.k8s.io/v1, allowed to every authenticated user) names the
identity in what is said.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from controller.cluster.runtime import clients
from controller.core import rendering

log = logging.getLogger(__name__)


PROBE = "settings-controller-confinement-probe"
PROBE_LABEL = "settings-controller.io/confinement-probe"
SERVICEACCOUNT_PREFIX = "system:serviceaccount:"

# (what is tried, the manifest applied): each must be refused.
_PROBES: tuple[tuple[str, Mapping[str, Any]], ...] = (
    (
        "a ConfigMap create in kube-system",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": rendering.CONFIGMAP_NAME, "namespace": "kube-system"},
        },
    ),
    (
        "a Secret create in kube-system",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": rendering.CREDENTIALS_SECRET_NAME, "namespace": "kube-system"},
            "type": "Opaque",
        },
    ),
    (
        "a Namespace create with a label of its own",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": PROBE, "labels": {PROBE_LABEL: "true"}},
        },
    ),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    username: str
    admitted: tuple[str, ...]  # the probes the API server let through
    refused: tuple[str, ...]
    unjudged: tuple[str, ...] = ()  # no answer, or a 5xx: not proven either way

    @property
    def confined(self) -> bool:
        return not self.admitted and not self.unjudged

    def line(self) -> str:
        if self.confined:
            return (
                f"confined: as {self.username}, the API server refused {len(self.refused)} of "
                f"{len(_PROBES)} writes the settings-controller-operator-* policies forbid "
                "(dry run)"
            )
        return (
            f"NOT confined: as {self.username}, {'; '.join(self.admitted + self.unjudged)}: the "
            "settings-controller-operator-* admission policies do not hold this identity "
            "(installed under another namespace or ServiceAccount name than the policies "
            "match, or not installed: deploy/README.md, 'What the operator can write, where')"
        )

    def involved(self, namespace: str) -> dict[str, Any]:
        """The object the Event is about: the operator's ServiceAccount, else its namespace."""
        parts = self.username.split(":")
        if self.username.startswith(SERVICEACCOUNT_PREFIX) and len(parts) == 4:
            return {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "namespace": parts[2],
                "name": parts[3],
            }
        return {"apiVersion": "v1", "kind": "Namespace", "name": namespace}


async def username(client: clients.Client) -> str:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        review = await client.post(
            "SelfSubjectReview", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body
        )
    except clients.WriteError as e:
        return f"<unknown identity: {e}>"
    user = review.get("status", {}).get("userInfo", {})
    return str(user.get("username") or "<unknown identity>")


async def check(client: clients.Client) -> Verdict:
    """Who the operator is, and which forbidden writes the API server would admit."""
    who = await username(client)
    admitted: list[str] = []
    refused: list[str] = []
    unjudged: list[str] = []
    for what, manifest in _PROBES:
        try:
            await client.apply(manifest, dry_run=True)
        except clients.WriteError as e:
            if e.status == 403:
                # Refused by a policy (or by RBAC, narrower than deploy/rbac): not writable.
                refused.append(what)
            else:
                # Not judged (a 5xx, a timeout): not proven, so not confined.
                unjudged.append(f"{what} could not be judged ({e.status or 'no answer'})")
            continue
        admitted.append(f"{what} was admitted (dry run)")
    return Verdict(who, tuple(admitted), tuple(refused), tuple(unjudged))


async def report(client: clients.Client, verdict: Verdict, namespace: str) -> None:
    """The log line and the Event; the caller sets the metric and decides."""
    if verdict.confined:
        log.info("%s", verdict.line())
    else:
        log.warning("%s", verdict.line())
    await client.post_event(
        verdict.involved(namespace),
        "Normal" if verdict.confined else "Warning",
        "Confined" if verdict.confined else "Unconfined",
        verdict.line(),
    )
