"""Reads ``schemas/`` into a catalog. Shared by both adapters; the core never reads files."""

from __future__ import annotations

import functools
import json
import os
import pathlib

from controller.core import catalog

_ENV = "SETTINGS_CONTROLLER_SCHEMAS"


def schemas_dir() -> pathlib.Path:
    """``$SETTINGS_CONTROLLER_SCHEMAS``, the copy inside an installed wheel, or the repository's."""
    if _ENV in os.environ:
        return pathlib.Path(os.environ[_ENV])
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / "common.json").is_file():
            return candidate
    raise FileNotFoundError(f"no schemas/ directory found (set {_ENV})")


@functools.cache
def load_catalog(directory: pathlib.Path | None = None) -> catalog.Catalog:
    return catalog.Catalog.from_documents(_documents(directory or schemas_dir()))


def fingerprint(directory: pathlib.Path | None = None) -> str:
    """``load_catalog(directory).fingerprint`` without building the validators (~0.1 s, and
    jsonschema's import): what a `reconcile` with nothing changed compares."""
    return catalog.fingerprint_of(_documents(directory or schemas_dir()))


def _documents(root: pathlib.Path) -> dict[str, catalog.Schema]:
    return {
        path.relative_to(root).as_posix(): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.json"))
    }
