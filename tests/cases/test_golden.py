"""Golden cases through file mode (tests/operator/test_golden_cases.py: through the operator).

See README.md beside this file for the layout. ``UPDATE_GOLDEN=1`` rewrites
``expected/`` from file mode (then read the diff: the operator must agree).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import CLI

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


def filemode_reasons(step: pathlib.Path, report: str) -> set[str]:
    """The reasons of ``reconcile -o json``'s report: file mode's verdict. (Not ``validate``'s:
    it checks a partial set too, where a missing global or Account is a note.)"""
    found = json.loads(report)
    items = found.get("findings", [])
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
        done = subprocess.run(
            [str(CLI), "reconcile", str(step / "declarations"), "--output-dir", out, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        got = {
            str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.glob("*/*.json"))
            if not p.parent.name.startswith(".")
        }
        reasons = filemode_reasons(step, done.stdout)
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
