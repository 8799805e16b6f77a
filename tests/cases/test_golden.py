"""Golden cases, run through file mode and through the operator: same bytes, same reasons.

See README.md beside this file for the layout. ``UPDATE_GOLDEN=1`` rewrites
``expected/`` from file mode (then read the diff: the operator must agree).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.fixtures import Kube
from tests.conftest import CLI, EXAMPLES
from tests.operator import support

CASES = pathlib.Path(__file__).resolve().parent
GROUP = "integrations.igny8.com"
# Policy outcomes that file mode reports as notes: not errors in either mode.
NOTES = {"PlanForbidsOverrides", "UnknownPlan", "OverrideInactive"}

Obj = tuple[str, str | None, str]  # kind, namespace, name


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def steps(case: str) -> list[pathlib.Path]:
    return sorted(p for p in (CASES / case).iterdir() if (p / "declarations").is_dir())


def documents(step: pathlib.Path) -> list[dict[str, Any]]:
    return [
        d
        for f in sorted((step / "declarations").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]


def identity(doc: dict[str, Any]) -> Obj:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace"), meta["name"]


def label(obj: Obj) -> str:
    kind, namespace, name = obj
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def expected_files(step: pathlib.Path) -> dict[str, bytes]:
    root = step / "expected"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.glob("*/*.json"))
        if p.is_file()
    }


def expected_reasons(step: pathlib.Path) -> set[str]:
    path = step / "expected" / "reasons.txt"
    text = path.read_text() if path.exists() else ""
    return {line.strip() for line in text.splitlines() if line.strip()}


def namespaces_of(case: str) -> set[str]:
    found = set()
    for step in steps(case):
        for doc in documents(step):
            kind, namespace, _ = identity(doc)
            if namespace:
                found.add(namespace)
            if kind == "Account":
                found.add(doc["spec"]["namespace"])
    return found


# --- file mode -------------------------------------------------------------------------


def filemode_reasons(step: pathlib.Path) -> set[str]:
    proc = subprocess.run(
        [str(CLI), "validate", str(step / "declarations"), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = json.loads(proc.stdout)
    items = found if isinstance(found, list) else found.get("findings", [])
    declared = [identity(d) for d in documents(step) if d["kind"] != "GlobalIntegrationSettings"]
    reasons = set()
    for item in items:
        if item["severity"] != "error":
            continue
        if item["object"]:
            reasons.add(f"{item['object']}: {item['reason']}")
        else:
            # A finding about the whole set (no global): every account and override hears it.
            reasons.update(f"{label(o)}: {item['reason']}" for o in declared)
    return reasons


@pytest.mark.parametrize("case", case_names())
def test_file_mode(case: str, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    for step in steps(case):
        subprocess.run(
            [str(CLI), "reconcile", str(step / "declarations"), "--output", str(out)],
            capture_output=True,
            check=False,
        )
        got = {
            str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.glob("*/*.json"))
            if not p.parent.name.startswith(".")
        }
        reasons = filemode_reasons(step)
        if os.environ.get("UPDATE_GOLDEN"):
            _write_expected(step, got, reasons)
        assert got == expected_files(step), step.name
        assert reasons == expected_reasons(step), step.name


def _write_expected(step: pathlib.Path, files: dict[str, bytes], reasons: set[str]) -> None:
    root = step / "expected"
    for old in root.glob("*/*.json"):
        old.unlink()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    (root / "reasons.txt").write_text("".join(f"{r}\n" for r in sorted(reasons)))


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
    try:
        for step in steps(case):
            docs = documents(step)
            now = [identity(d) for d in docs]
            for obj in previous:
                if obj not in now:
                    kind, namespace, name = obj
                    args = [f"{kind.lower()}.{GROUP}", name]
                    kube.kubectl("delete", *args, *(["-n", namespace] if namespace else []))
            kube.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", "-",
                input="\n---\n".join(json.dumps(d) for d in docs),
            )  # fmt: skip
            previous = now
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
