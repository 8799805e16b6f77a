"""Reading an output directory back in tests."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml


def effective(out: pathlib.Path, namespace: str, type_: str) -> dict[str, Any]:
    return json.loads((out / namespace / f"{type_}.json").read_text())  # type: ignore[no-any-return]


def manifest(out: pathlib.Path, namespace: str) -> dict[str, Any]:
    return yaml.safe_load((out / namespace / "integration-settings.yaml").read_text())  # type: ignore[no-any-return]


def snapshot(out: pathlib.Path) -> dict[str, tuple[int, int, str]]:
    """Every output file (state excluded): inode, mtime and content, to tell rewrites apart."""
    return {
        p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_text())
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".settings-controller" not in p.parts
    }


def contents(out: pathlib.Path) -> dict[str, str]:
    return {name: text for name, (_, _, text) in snapshot(out).items()}
