"""Properties of the merge that must hold for any override map."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import schemafiles
from controller.core import credentials, merging
from tests.core import builders

CATALOG = schemafiles.load_catalog()
FAKE_KEY = "sk-FAKE-PROPERTYKEY-4242"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
credential_names = st.sampled_from(
    [
        "apiKey",
        "api_key",
        "openai_api_key",
        "runware_api_key",
        "ApiKey",
        "SECRET",
        "clientSecret",
        "password",
        "auth_token",
        "access-token",
        "private_key",
    ]
)
field_names = (
    st.sampled_from([f for t in CATALOG.integrations.values() for f in t.fields])
    | credential_names
    | st.text(min_size=1, max_size=12)
)
override_maps = st.dictionaries(field_names, json_values | st.just(FAKE_KEY), max_size=8)


def merge(overrides: dict[str, dict[str, Any]], plan: str = "pro") -> merging.AccountResult:
    g = builders.parsed(CATALOG, builders.global_body())
    account = builders.parsed(CATALOG, builders.account_body(plan=plan))
    objs = {
        t: builders.parsed(CATALOG, builders.override_body(t, overrides=o))
        for t, o in overrides.items()
    }
    return merging.merge_account(CATALOG, g, account, objs)


per_type = st.fixed_dictionaries({}, optional={t: override_maps for t in CATALOG.integrations})


@settings(max_examples=300, deadline=None)
@given(per_type)
def test_no_credential_field_or_key_value_survives(overrides: dict[str, dict[str, Any]]) -> None:
    result = merge(overrides)
    rendered = json.dumps(result.data)
    assert FAKE_KEY not in rendered
    for integration in result.integrations:
        for name in credentials.nested_names(integration.document()):
            assert not CATALOG.looks_like_credential(name)
    assert all(FAKE_KEY not in f.message for f in result.findings)


@settings(max_examples=300, deadline=None)
@given(per_type, st.sampled_from(["pro", "free", "unknown"]))
def test_using_global_iff_nothing_overridden(
    overrides: dict[str, dict[str, Any]], plan: str
) -> None:
    result = merge(overrides, plan)
    for integration in result.integrations:
        doc = integration.document()
        assert doc["using_global"] == (doc["overridden"] == [])
        if plan != "pro":
            assert doc["using_global"]
        defaults = builders.GLOBAL_SPEC["integrations"][integration.type]["defaults"]
        for field, value in integration.values.items():
            if field in integration.overridden:
                assert value == overrides[integration.type][field]
            else:
                assert value == defaults[field]


@settings(max_examples=200, deadline=None)
@given(per_type)
def test_merge_is_deterministic_and_idempotent(overrides: dict[str, dict[str, Any]]) -> None:
    first = merge(overrides)
    reordered = {t: dict(reversed(list(o.items()))) for t, o in reversed(list(overrides.items()))}
    assert merge(reordered).data == first.data
    # Feeding the applied values back as the only overrides changes nothing.
    applied = {i.type: {f: i.values[f] for f in i.overridden} for i in first.integrations}
    again = merge(applied)
    assert again.data == first.data
    assert not again.has_errors
