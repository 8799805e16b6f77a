"""The start-up confinement check's verdicts, against a fake API (the real one:
test_confinement.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from controller.cluster import confinement
from controller.cluster.runtime import clients


class FakeApi:
    def __init__(self, answers: Mapping[str, int], username: str = "system:serviceaccount:ns:sc"):
        self.answers, self.username = answers, username
        self.sent: list[tuple[str, str, bool]] = []  # (kind, name, dry run) of each apply

    async def post(
        self, what: str, path: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        assert path.endswith("selfsubjectreviews"), path  # the probes are applies
        return {"status": {"userInfo": {"username": self.username}}}

    async def apply(self, manifest: Mapping[str, Any], dry_run: bool = False) -> None:
        self.sent.append((manifest["kind"], manifest["metadata"]["name"], dry_run))
        status = self.answers[manifest["kind"]]
        if status >= 300:
            raise clients.WriteError(f"apply {manifest['kind']}: {status}", status)


def check(api: FakeApi) -> confinement.Verdict:
    return asyncio.run(confinement.check(api))  # type: ignore[arg-type]


def test_every_forbidden_write_refused_is_confined() -> None:
    api = FakeApi({"ConfigMap": 403, "Secret": 403, "Namespace": 403})
    verdict = check(api)
    assert verdict.confined and len(verdict.refused) == 3
    assert "confined: as system:serviceaccount:ns:sc" in verdict.line()
    # Every probe is a dry run (nothing may be stored), of a name RBAC lets the operator
    # write: only a policy can refuse it.
    assert api.sent == [
        ("ConfigMap", "integration-settings", True),
        ("Secret", "integration-credentials", True),
        ("Namespace", confinement.PROBE, True),
    ]
    assert verdict.involved("x") == {
        "apiVersion": "v1", "kind": "ServiceAccount", "namespace": "ns", "name": "sc"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        pytest.param({"ConfigMap": 201, "Secret": 403, "Namespace": 403}, "a ConfigMap create in kube-system was admitted", id="admitted"),
        pytest.param({"ConfigMap": 403, "Secret": 403, "Namespace": 503}, "could not be judged (503)", id="unjudged"),
    ],
)  # fmt: skip
def test_one_admitted_or_unjudged_write_is_not_confined(answers: dict[str, int], said: str) -> None:
    verdict = check(FakeApi(answers, username="admin"))
    assert not verdict.confined
    assert said in verdict.line() and verdict.line().startswith("NOT confined: as admin")
    assert verdict.involved("settings-controller-system")["kind"] == "Namespace"
