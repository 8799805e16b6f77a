"""Golden cases (tests/cases) through the operator: the same bytes and reasons as file mode."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cases.test_golden import (
    GROUP,
    NOTES,
    Obj,
    case_names,
    documents,
    expected_files,
    expected_reasons,
    identity,
    label,
    namespaces_of,
    steps,
)
from tests.conftest import EXAMPLES
from tests.harness.fixtures import Kube
from tests.operator import support

# --- cluster mode ----------------------------------------------------------------------


@pytest.fixture
def case_cluster(installed: Kube, operator: support.Operator) -> Iterator[Kube]:
    yield installed
    # Every case ends with the example global back in place.
    installed.kubectl("apply", "-f", str(EXAMPLES / "global.yaml"))


def _current(kube: Kube, obj: Obj) -> dict[str, Any] | None:
    kind, namespace, name = obj
    args = [f"{kind.lower()}.{GROUP}", name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    proc = kube.kubectl("get", *args, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _cluster_state(kube: Kube, namespaces: set[str], objects: list[Obj]) -> tuple[Any, ...]:
    files: dict[str, bytes] = {}
    for ns in sorted(namespaces):
        proc = kube.kubectl(
            "get", "configmap", "integration-settings", "-n", ns, "-o", "json", check=False
        )
        if proc.returncode == 0:
            for key, value in (json.loads(proc.stdout).get("data") or {}).items():
                files[f"{ns}/{key}"] = value.encode()
    reasons, stale = set(), []
    for obj in objects:
        body = _current(kube, obj)
        if body is None:
            continue
        status = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"].get("generation"):
            stale.append(label(obj))
        ready = support.condition(body) if status.get("conditions") else None
        if ready is None:
            stale.append(label(obj))
        elif ready["status"] == "False" and ready["reason"] not in NOTES:
            reasons.add(f"{label(obj)}: {ready['reason']}")
    return files, reasons, stale


@pytest.mark.cluster
@pytest.mark.parametrize("case", case_names())
def test_operator(case: str, case_cluster: Kube) -> None:
    kube = case_cluster
    namespaces = namespaces_of(case)
    for ns in sorted(namespaces):
        kube.kubectl("create", "namespace", ns, check=False)
    previous: list[Obj] = []
    before: dict[Obj, dict[str, Any]] = {}
    try:
        for step in steps(case):
            docs = documents(step)
            now = [identity(d) for d in docs]
            for obj in previous:
                if obj not in now:
                    kind, namespace, name = obj
                    args = [f"{kind.lower()}.{GROUP}", name]
                    kube.kubectl("delete", *args, *(["-n", namespace] if namespace else []))
            # Only what changed: an unchanged override goes through admission again
            # on apply, and a plan downgrade makes the plan policy refuse it.
            changed = [d for d in docs if before.get(identity(d)) != d]
            if changed:
                kube.kubectl(
                    "apply", "--server-side", "--force-conflicts", "-f", "-",
                    input="\n---\n".join(json.dumps(d) for d in changed),
                )  # fmt: skip
            previous = now
            before = {identity(d): d for d in docs}
            want = (expected_files(step), expected_reasons(step), [])
            deadline = time.monotonic() + 30
            got = _cluster_state(kube, namespaces, now)
            while got != want and time.monotonic() < deadline:
                time.sleep(0.3)
                got = _cluster_state(kube, namespaces, now)
            assert got[0] == want[0], f"{step.name}: outputs differ from file mode's"
            assert got[1] == want[1], f"{step.name}: reasons differ from file mode's"
            assert not got[2], f"{step.name}: statuses not current: {got[2]}"
    finally:
        for kind, namespace, name in previous:
            if kind != "GlobalIntegrationSettings":
                args = [f"{kind.lower()}.{GROUP}", name, "--ignore-not-found", "--wait=false"]
                kube.kubectl("delete", *args, *(["-n", namespace] if namespace else []))
        for ns in sorted(namespaces):
            kube.kubectl(
                "delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False
            )
