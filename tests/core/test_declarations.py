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


ENDPOINT_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        pytest.param(f"https://gw.internal/v1/{ENDPOINT_KEY}", "looks like it holds", id="path"),
        pytest.param(
            f"https://gw.internal/{ENDPOINT_KEY}/v1", "looks like it holds", id="mid-path"
        ),
        pytest.param(
            f"https://gw.internal/v1?key={ENDPOINT_KEY}", "looks like it holds", id="query"
        ),
        pytest.param(
            "https://gw.internal/v1/AbCdEfGhIjKlMnOpQrStUvWx0123456789",
            "looks like it holds",
            id="runware-shaped",
        ),
        pytest.param(
            f"https://user:{ENDPOINT_KEY}@gw.internal/v1", "holds userinfo", id="userinfo"
        ),
        pytest.param("https://apikey@gw.internal/v1", "holds userinfo", id="user"),
        pytest.param(
            "https://gw.internal/v1/" + "".join(f"%{b:02x}" for b in ENDPOINT_KEY.encode()),
            "holds a percent escape",
            id="percent-encoded",
        ),
        pytest.param("https://gw.internal/v1?q=%41", "holds a percent escape", id="any-escape"),
    ],
)
def test_an_endpoint_holding_a_key_is_refused_by_field_without_echo(
    catalog: catalog_.Catalog, endpoint: str, problem: str
) -> None:
    # Break 4 of issue 20: a key in the endpoint's path was admitted, sent and shown.
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["credentials"]["apiKey"]["endpoint"] = endpoint
    [(path, message)] = problems(catalog, body)
    assert path == ("spec", "integrations", "openai", "credentials", "apiKey", "endpoint")
    assert message.startswith(f"spec.integrations.openai.credentials.apiKey.endpoint: {problem}"), (
        message
    )
    assert "gw.internal" not in message and ENDPOINT_KEY[10:18] not in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://api.openai.com/v1",
        "https://llm-gateway.internal/v1",
        "http://127.0.0.1:8080/openai/v1",
        "https://myres.openai.azure.com/openai/deployments/gpt-4o-mini",
        "https://gateway.example.com/proxy/openai/v1",
    ],
)
def test_ordinary_endpoints_are_accepted(catalog: catalog_.Catalog, endpoint: str) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["credentials"]["apiKey"]["endpoint"] = endpoint
    assert problems(catalog, body) == []


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


_API = {"apiVersion": "integrations.igny8.com/v1alpha1"}


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "IntegrationSettings", "metadata": {"name": "openai", "namespace": "a"},
         "spec": {"x": 1, "overrides": [1, 2]}},
        {"kind": "IntegrationSettings", "metadata": {"name": "openai", "namespace": "a"},
         "spec": {"x": 1, "overrides": {1: "a", "model": 2}}},
        {"kind": "IntegrationSettings", "metadata": {"name": 7, "namespace": "a"},
         "spec": {"overrides": {"model": 2}}},
        {"kind": "IntegrationSettings", "metadata": {"name": "nope", "namespace": "a"},
         "spec": {"overrides": {"model": 2}}},
        {"kind": "IntegrationSettings", "metadata": "x", "spec": "y"},
        {"kind": "Account", "metadata": {"name": "a"}, "spec": {"namespace": 5, "plan": []}},
        {"kind": "Account", "metadata": {"name": "a"}, "spec": ["kube-system"]},
        {"kind": "GlobalIntegrationSettings", "metadata": {"name": "default"},
         "spec": {"integrations": {"openai": {"defaults": [], "allowedValues": {"model": "x"},
                                              "credentials": {"apiKey": "sk-x"}}}}},
        {"kind": "GlobalIntegrationSettings", "metadata": {"name": "default"},
         "spec": {"integrations": {"openai": {"defaults": {"model": [1]},
                                              "allowedValues": {"model": [[1]]}}}}},
    ],
)  # fmt: skip
def test_checks_beyond_the_schema_survive_any_invalid_body(
    catalog: catalog_.Catalog, body: dict[str, Any]
) -> None:
    """They now run on bodies that failed the schema (every error in one run): never a
    crash (71d903e was one), always at least the schema's errors."""
    found = problems(catalog, {**_API, **body})
    assert found and all(isinstance(message, str) for _, message in found)


def test_override_fields_are_screened_beside_a_schema_error(catalog: catalog_.Catalog) -> None:
    body = builders.override_body(overrides={"temperature": 9, "model": "gpt-4o"})
    body["spec"]["bogus"] = True
    assert problems(catalog, body) == [
        (("spec", "bogus"), "spec.bogus: unknown field"),
        (
            ("spec", "overrides", "temperature"),
            "spec.overrides.temperature: rejected: must be <= 2",
        ),
    ]
