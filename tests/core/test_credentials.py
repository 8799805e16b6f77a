"""The key-shape detector and the places a key-shaped string must never be echoed or copied.

Issue 10 items 4, 8, 9, 10 and 11, in the core; the same strings go through the
admission policies in tests/operator/test_admission.py.
"""

from __future__ import annotations

import json

import pytest

from controller.core import catalog as catalog_
from controller.core import credentials, declarations, findings, merging
from tests.core import builders, keyshapes


@pytest.mark.parametrize("value", keyshapes.KEY_SHAPED)
def test_key_shaped(value: str) -> None:
    assert credentials.looks_like_key_value(value)
    assert value not in credentials.printable_name(value)


@pytest.mark.parametrize("value", keyshapes.NOT_KEY_SHAPED)
def test_not_key_shaped(value: str) -> None:
    assert not credentials.looks_like_key_value(value)
    assert credentials.printable_name(value) == value


def _merge(
    cat: catalog_.Catalog, type_: str, overrides: dict[str, object]
) -> merging.AccountResult:
    global_ = builders.parsed(cat, builders.global_body())
    account = builders.parsed(cat, builders.account_body())
    override = builders.parsed(cat, builders.override_body(type_, overrides=overrides))
    return merging.merge_account(cat, global_, account, {override.type: override})


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({" sk-live-abc123": "x"}, id="leading-space-name"),
        pytest.param({"AIzaSyA1b2C3d4E5f6G7h8I9j0-KLmnopqrs_tu": 1}, id="google-name"),
        pytest.param({"sizes": {"sk_live_abcdef123": "1x1"}}, id="key-named-size"),
    ],
)
def test_key_shaped_names_are_never_echoed(
    catalog: catalog_.Catalog, overrides: dict[str, object]
) -> None:
    """Issue 10 item 8: such names were echoed verbatim in the status and Warning Events."""
    type_ = "image_generation" if "sizes" in overrides else "openai"
    result = _merge(catalog, type_, overrides)
    assert [f.reason for f in result.findings] == [findings.Reason.CREDENTIAL_STRIPPED]
    text = json.dumps([f.message for f in result.findings]) + json.dumps(result.data)
    for name in credentials.nested_names(overrides):
        if credentials.looks_like_key_value(name):
            assert name.strip() not in text


@pytest.mark.parametrize("value", ["org/sk-abcdef0123456789", "AIzaSyA1b2C3d4E5f6G7h8I9j0-KLm"])
def test_key_shaped_values_do_not_reach_the_configmap(
    catalog: catalog_.Catalog, value: str
) -> None:
    """Issue 10 item 9: these reached the ConfigMap."""
    result = _merge(catalog, "image_generation", {"model": value})
    assert [f.reason for f in result.findings] == [findings.Reason.CREDENTIAL_STRIPPED]
    assert value not in json.dumps(result.data)
    assert value not in json.dumps([f.message for f in result.findings])


KEY = "sk-proj-PASTEDintoTHEglobal0123456789"
NAME_KEY = "sk_live_pastedasasizename0123"  # a size name may only be lowercase


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(("image_generation", "defaults", "model"), KEY, id="default"),
        pytest.param(
            ("image_generation", "defaults", "sizes"), {NAME_KEY: "1x1"}, id="nested-name"
        ),
        pytest.param(("openai", "allowedValues", "model", 1), KEY, id="allowed-value"),
        pytest.param(("openai", "credentials", "apiKey", "key"), KEY, id="secret-key-name"),
        pytest.param(
            ("openai", "credentials", "apiKey", "secretName"), KEY.lower(), id="secret-name"
        ),
    ],
)
def test_key_in_the_global_is_refused(
    catalog: catalog_.Catalog, path: tuple[object, ...], value: object
) -> None:
    """Issue 10 items 4 and 10: a key in the defaults reached every ConfigMap; one pasted as
    a Secret key name was echoed in CredentialsReady. Now the global is invalid, by field."""
    body = builders.global_body()
    holder = body["spec"]["integrations"]
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    decl, problems = declarations.parse(catalog, body)
    assert decl is None
    assert [p.reason for p in problems] == [findings.Reason.KEY_SHAPED_VALUE]
    dotted = ".".join(str(p) for p in ("spec", "integrations", *path[:3]))
    assert problems[0].message.startswith(dotted), problems[0].message
    for secret in (KEY, KEY.lower(), NAME_KEY):
        assert secret not in problems[0].message


@pytest.mark.parametrize("namespace", declarations.RESERVED_NAMESPACES)
def test_reserved_namespaces_are_refused(catalog: catalog_.Catalog, namespace: str) -> None:
    """Issue 10 item 11: kube-system, default and the operator's namespace were accepted."""
    decl, problems = declarations.parse(catalog, builders.account_body(namespace=namespace))
    assert decl is None
    assert [p.reason for p in problems] == [findings.Reason.RESERVED_NAMESPACE]
    assert problems[0].message.startswith(f"spec.namespace: {namespace} is reserved")


def test_the_reserved_list_is_an_input(catalog: catalog_.Catalog) -> None:
    body = builders.account_body(namespace="platform-tools")
    assert declarations.parse(catalog, body)[1] == []
    decl, problems = declarations.parse(catalog, body, reserved_namespaces=["platform-tools"])
    assert decl is None and problems[0].reason == findings.Reason.RESERVED_NAMESPACE
    kube_system = builders.account_body(namespace="kube-system")
    assert declarations.parse(catalog, kube_system, reserved_namespaces=())[1] == []
