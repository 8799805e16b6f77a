"""Schema and cross-object checks of the core, with the paths the adapters turn into lines."""

from __future__ import annotations

from typing import Any

import pytest

from controller.core import catalog as catalog_
from controller.core import declarations, findings, inventory
from tests.core import builders


def problems(cat: catalog_.Catalog, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    decl, found = declarations.parse(cat, body)
    assert (decl is None) == bool(found)
    return [(f.path, f.message) for f in found]


def test_examples_shapes_are_valid(catalog: catalog_.Catalog) -> None:
    for body in (builders.global_body(), builders.account_body(), builders.override_body()):
        assert problems(catalog, body) == []


def test_global_must_be_named_default(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["metadata"]["name"] = "other"
    assert problems(catalog, body) == [(("metadata", "name"), 'metadata.name: must be "default"')]


def test_unknown_integration_type_in_global(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["speech"] = {"defaults": {}}
    assert problems(catalog, body) == [
        (("spec", "integrations", "speech"), "spec.integrations.speech: unknown field")
    ]


def test_unknown_integration_type_in_override(catalog: catalog_.Catalog) -> None:
    [(path, message)] = problems(catalog, builders.override_body("speech"))
    assert path == ("metadata", "name") and "openai" in message


def test_defaults_are_checked_against_the_integration_schema(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["defaults"]["temperature"] = 3
    del body["spec"]["integrations"]["openai"]["defaults"]["max_tokens"]
    assert problems(catalog, body) == [
        (
            ("spec", "integrations", "openai", "defaults"),
            "spec.integrations.openai.defaults: missing required field 'max_tokens'",
        ),
        (
            ("spec", "integrations", "openai", "defaults", "temperature"),
            "spec.integrations.openai.defaults.temperature: must be <= 2",
        ),
    ]


def test_default_must_be_among_allowed_values(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["allowedValues"]["model"] = ["gpt-4o"]
    [(path, message)] = problems(catalog, body)
    assert path[-1] == "model" and "allowedValues" in message


def test_a_literal_key_in_credentials_is_refused_without_echo(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["credentials"]["apiKey"] = "sk-FAKE-LITERAL-KEY"
    found = problems(catalog, body)
    assert found and all("sk-FAKE" not in message for _, message in found)


def test_non_finite_numbers_are_refused(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["defaults"]["temperature"] = float("nan")
    assert any("finite" in m for _, m in problems(catalog, body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"kind": "Deployment"}, id="other-kind"),
        pytest.param({}, id="no-kind"),
    ],
)
def test_unknown_kinds(catalog: catalog_.Catalog, body: dict[str, Any]) -> None:
    [(path, message)] = problems(catalog, body)
    assert path == ("kind",) and "unknown kind" in message


def reasons_of(inv: inventory.Inventory) -> list[str]:
    return sorted(f.reason.value for f in inv.findings)


def test_inventory_checks(catalog: catalog_.Catalog) -> None:
    p = lambda body: builders.parsed(catalog, body)  # noqa: E731
    inv = inventory.assemble(
        [
            p(builders.global_body()),
            p(builders.global_body()),
            p(builders.account_body("a")),
            p(builders.account_body("a", namespace="a2")),
            p(builders.account_body("b", namespace="shared")),
            p(builders.account_body("c", namespace="shared")),
            p(builders.account_body("d")),
            p(builders.override_body(namespace="d")),
            p(builders.override_body(namespace="d")),
            p(builders.override_body(namespace="nobody")),
        ]
    )
    assert reasons_of(inv) == [
        "DuplicateObject",
        "DuplicateObject",
        "DuplicateObject",
        "DuplicateObject",
        "GlobalNotSingleton",
        "GlobalNotSingleton",
        "NamespaceConflict",
        "NamespaceConflict",
        "NoAccountForNamespace",
    ]
    assert inv.global_ is None
    assert inv.blocked == {"a", "a2", "shared", "d"}
    assert set(inv.accounts) == set()


def test_no_global_is_an_error_when_accounts_exist(catalog: catalog_.Catalog) -> None:
    inv = inventory.assemble([builders.parsed(catalog, builders.account_body())])
    assert [f.reason for f in inv.findings] == [findings.Reason.NO_GLOBAL]
