"""deploy/crd and the generated admission policy never drift from schemas/."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from controller.core import catalog as catalog_
from controller.generators import crds
from tests.conftest import CLI, REPO


def test_committed_crds_match_schemas() -> None:
    proc = subprocess.run(
        [
            str(CLI),
            "crds",
            "--check",
            "--output-dir",
            "deploy/crd",
            "--policy-file",
            "deploy/policy/generated.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_check_notices_a_hand_edit(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "crd"
    args = [str(CLI), "crds", "--output-dir", str(out)]
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    edited = out / "integrations.igny8.com_accounts.yaml"
    edited.write_text(edited.read_text().replace("plan", "tier", 1))
    proc = subprocess.run([*args, "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "integrations.igny8.com_accounts.yaml" in proc.stderr


@pytest.mark.parametrize("where", ["file", "under-file", "policy-dir"])
def test_an_unwritable_target_is_one_line_naming_it(tmp_path: pathlib.Path, where: str) -> None:
    """A file where DIR was expected (a typo), a DIR below a file, and a directory where the
    policy file goes: exit 1, one line naming the path in the way, no traceback."""
    blocker = tmp_path / "crd"
    if where == "policy-dir":
        blocker.mkdir()
        args = ["--policy-file", str(blocker)]
        expected = f"cannot write {blocker}: Is a directory"
    else:
        blocker.write_text("not a directory\n")
        target = blocker if where == "file" else blocker / "sub"
        args = ["--output-dir", str(target)]
        expected = f"{blocker} is not a directory"
    proc = subprocess.run([str(CLI), "crds", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("settings-controller: error: cannot write "), proc.stderr
    assert expected in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def _walk(node: object, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("kind", catalog_.KINDS)
def test_schemas_are_structural(catalog: catalog_.Catalog, kind: str) -> None:
    schema = crds.crd(catalog, kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations"):
            continue
        if "type" in node or "x-kubernetes-preserve-unknown-fields" in node:
            assert not ({"const", "$schema", "$id", "propertyNames"} & set(node)), path
            assert not node.get("uniqueItems"), path
            assert not ("additionalProperties" in node and "properties" in node), path


def test_override_names_are_object_names(catalog: catalog_.Catalog) -> None:
    # Kubernetes object names cannot hold "_": image_generation is image-generation.
    names = {t.object_name for t in catalog.integrations.values()}
    assert "image-generation" in names
    assert all(catalog.type_for_object_name(n) is not None for n in names)
    assert catalog.type_for_object_name("image_generation") == "image_generation"
    assert catalog.type_for_object_name("nope") is None


def test_account_columns_show_platform_defaults_per_integration(
    catalog: catalog_.Catalog,
) -> None:
    columns = crds.printer_columns(catalog, catalog_.ACCOUNT)
    paths = {c["jsonPath"] for c in columns}
    for type_name in catalog.integrations:
        assert f".status.usingGlobal.{type_name}" in paths
