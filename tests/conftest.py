"""Shared fixtures: the catalog, the installed CLI, and the control-plane and operator plugins."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from controller import schemafiles
from controller.core import catalog as catalog_

# The control plane (kube, namespace, helm), then deploy/ and the operator on it
# (installed, operator, tenant_ns): one definition each, for every package.
pytest_plugins = ["tests.harness.fixtures", "tests.operator.fixtures"]

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# The installed console script, next to the interpreter running the tests.
CLI = pathlib.Path(sys.executable).parent / "settings-controller"

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def catalog() -> catalog_.Catalog:
    return schemafiles.load_catalog()


@pytest.fixture
def cli() -> RunCli:
    """Run ``settings-controller`` in a subprocess, as a user would."""

    def run(
        *args: str | pathlib.Path,
        cwd: pathlib.Path | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env else None,
        )

    return run


@pytest.fixture
def declarations(tmp_path: pathlib.Path) -> pathlib.Path:
    """A private copy of examples/ to edit."""
    target = tmp_path / "declarations"
    shutil.copytree(EXAMPLES, target)
    return target
