"""Object bodies for core tests, shaped like the examples."""

from __future__ import annotations

import copy
from typing import Any

from controller.core import catalog, declarations

API = "integrations.igny8.com/v1alpha1"

GLOBAL_SPEC: dict[str, Any] = {
    "plans": {"free": {"allowOverrides": False}, "pro": {"allowOverrides": True}},
    "integrations": {
        "openai": {
            "enabled": True,
            "credentials": {"apiKey": {"secretName": "platform-api-keys", "key": "openai"}},
            "defaults": {"model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 8192},
            "allowedValues": {"model": ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]},
        },
        "image_generation": {
            "enabled": True,
            "credentials": {
                "dalle": {"secretName": "platform-api-keys", "key": "dalle"},
                "runware": {"secretName": "platform-api-keys", "key": "runware"},
            },
            "defaults": {
                "service": "openai",
                "model": "dall-e-3",
                "image_quality": "standard",
                "image_style": "vivid",
                "sizes": {"featured": "1024x1024"},
            },
        },
    },
}


def global_body(**spec_changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GLOBAL_SPEC)
    spec.update(spec_changes)
    return {
        "apiVersion": API,
        "kind": "GlobalIntegrationSettings",
        "metadata": {"name": "default"},
        "spec": spec,
    }


def account_body(
    name: str = "acct-123", plan: str = "pro", namespace: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Account",
        "metadata": {"name": name},
        "spec": {"plan": plan, "namespace": namespace or name},
    }


def override_body(
    type_: str = "openai",
    namespace: str = "acct-123",
    overrides: dict[str, Any] | None = None,
    is_active: bool | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"overrides": overrides or {}}
    if is_active is not None:
        spec["isActive"] = is_active
    return {
        "apiVersion": API,
        "kind": "IntegrationSettings",
        "metadata": {"name": type_, "namespace": namespace},
        "spec": spec,
    }


def parsed(cat: catalog.Catalog, body: dict[str, Any]) -> Any:
    decl, problems = declarations.parse(cat, body)
    assert not problems, [p.message for p in problems]
    return decl
