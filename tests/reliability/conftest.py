"""Reliability tests: each records its figures (cases, faults, times, leaks).

The figures are printed in a "reliability figures" section at the end of the
session, and appended as JSON lines to ``$RELIABILITY_FIGURES`` when that is
set, so tests/RELIABILITY.md can be refreshed from a real run.
"""

from __future__ import annotations

import json
import os
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
