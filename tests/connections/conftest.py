"""Fixtures for the connection checks: local provider servers and a global pointing at them."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.connections import providers

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
ENDPOINTS = {"apiKey": "openai", "dalle": "openai", "runware": "runware"}


@pytest.fixture(scope="session")
def fake() -> Iterator[providers.Providers]:
    with providers.Providers(hang=5.0) as server:
        yield server


def global_body(endpoints: dict[str, str]) -> dict[str, Any]:
    """examples/global.yaml with each credential's endpoint set (slot -> URL)."""
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "global.yaml").read_text())
    for block in body["spec"]["integrations"].values():
        for slot, ref in block.get("credentials", {}).items():
            if slot in endpoints:
                ref["endpoint"] = endpoints[slot]
    return body


def local_endpoints(fake: providers.Providers) -> dict[str, str]:
    return {slot: getattr(fake, provider) for slot, provider in ENDPOINTS.items()}
