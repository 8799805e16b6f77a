"""Fixtures for the connection checks: the provider simulator and a global pointing at it."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.providers import simulator

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
ENDPOINTS = {"apiKey": "openai", "dalle": "openai", "runware": "runware"}


@pytest.fixture(scope="session")
def sim() -> Iterator[simulator.Simulator]:
    """One simulator for the session (TLS, chunked, gzip); tests pick answers by key."""
    with simulator.Simulator(hang=5.0) as server:
        yield server


@pytest.fixture
def trusted(sim: simulator.Simulator, monkeypatch: pytest.MonkeyPatch) -> simulator.Simulator:
    """The simulator, its CA trusted in this process through SSL_CERT_FILE."""
    for name, value in sim.env().items():
        monkeypatch.setenv(name, value)
    return sim


def global_body(endpoints: dict[str, str]) -> dict[str, Any]:
    """examples/global.yaml with each credential's endpoint set (slot -> URL)."""
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "global.yaml").read_text())
    for block in body["spec"]["integrations"].values():
        for slot, ref in block.get("credentials", {}).items():
            if slot in endpoints:
                ref["endpoint"] = endpoints[slot]
    return body


def local_endpoints(sim: simulator.Simulator) -> dict[str, str]:
    return {slot: getattr(sim, provider) for slot, provider in ENDPOINTS.items()}
