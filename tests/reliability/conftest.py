"""Reliability tests: each records its figures (cases, faults, times, leaks).

The figures are printed in a "reliability figures" section at the end of the
session, and appended as JSON lines to ``$RELIABILITY_FIGURES`` when that is
set, so tests/RELIABILITY.md can be refreshed from a real run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

_FIGURES: list[tuple[str, str, Any]] = []


def fuzz_budget(default: int = 400) -> int:
    """Total generated cases for one fuzz test: ``$FUZZ_BUDGET`` (``make fuzz``), else small."""
    raw = os.environ.get("FUZZ_BUDGET", "").strip()
    return int(raw) if raw else default


class Figures:
    def __init__(self, test: str) -> None:
        self.test = test

    def __setitem__(self, key: str, value: Any) -> None:
        _FIGURES.append((self.test, key, value))
        path = os.environ.get("RELIABILITY_FIGURES")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"test": self.test, key: value}) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, key, value in _FIGURES:
        terminalreporter.write_line(f"{test}: {key} = {value}")


@pytest.fixture(scope="session")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private control plane with deploy/ installed, the platform keys and the global.

    Destructive tests (stopping the apiserver, restarting etcd, SIGKILLing the
    operator mid fan-out) run here, never on the shared instance.
    """
    from tests.harness import controlplane as cp
    from tests.harness.fixtures import ensure_binary
    from tests.operator.fixtures import install
    from tests.reliability import private as private_

    ensure_binary(cp.Paths())
    root = pathlib.Path(tempfile.mkdtemp(prefix="kh-", dir="/tmp"))  # short: unix socket paths
    cluster = private_.PrivateCluster(root)
    try:
        install(cluster.kube)
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def operator_factory(private: Any, tmp_path: pathlib.Path) -> Iterator[Any]:
    """Start operators (as the ServiceAccount) on the private control plane; stopped after."""
    from tests.operator import support

    started: list[Any] = []

    def make(
        name: str = "operator", args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Any:
        op = support.Operator(private.kube, tmp_path / f"{name}.log", args, env)
        op.start()
        started.append(op)
        return op

    yield make
    for op in started:
        if op.proc is not None and op.proc.poll() is None:
            op.stop()
        elif op.proc is not None:
            op.proc.wait()
    with (private.paths.root / "operator-logs.txt").open("a") as fh:
        fh.write("".join(op.log_text() for op in started))
