"""Reading an output directory back in tests."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

# What reading an output the watcher is writing may raise: not there yet, partial (a
# JSON or YAML ValueError), or without the key yet. ``until(..., ignoring=MIDWRITE)``.
MIDWRITE = (FileNotFoundError, ValueError, KeyError)


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


@contextlib.contextmanager
def unwritable(directory: pathlib.Path) -> Iterator[None]:
    """A directory nobody may write to, root included: the immutable attribute, else permissions."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.fail("chattr (e2fsprogs) is needed to make a directory unwritable for root")
        subprocess.run(["chattr", "+i", str(directory)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
