"""Every merge rule of the README's "Merge rules" section, on the pure core."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from controller.core import catalog as catalog_
from controller.core import declarations, findings, merging, rendering
from tests.core import builders

Reason = findings.Reason


def merge(
    cat: catalog_.Catalog,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    plan: str = "pro",
    is_active: bool | None = None,
    global_body: dict[str, Any] | None = None,
) -> merging.AccountResult:
    g = builders.parsed(cat, global_body or builders.global_body())
    account = builders.parsed(cat, builders.account_body(plan=plan))
    objs = {
        t: builders.parsed(cat, builders.override_body(t, overrides=o, is_active=is_active))
        for t, o in (overrides or {}).items()
    }
    return merging.merge_account(cat, g, account, objs)


def doc(result: merging.AccountResult, type_: str) -> dict[str, Any]:
    return json.loads(result.data[f"{type_}.json"])  # type: ignore[no-any-return]


def reasons(result: merging.AccountResult) -> list[str]:
    return [f.reason.value for f in result.findings]


# The tenant's choices: the schema of each overridable field, the global's
# allowedValues as its enum.
OPENAI_CHOICES = {
    "overrides_allowed": True,
    "fields": {
        "model": {
            "type": "string",
            "description": "Chat model name, e.g. gpt-4o-mini.",
            "minLength": 1,
            "maxLength": 128,
            "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@/-]*$",
            "enum": ["gpt-4o-mini", "gpt-4o", "gpt-4.1"],
        },
        "temperature": {
            "type": "number",
            "description": "Sampling temperature, from 0 (deterministic) to 2.",
            "minimum": 0,
            "maximum": 2,
        },
        "max_tokens": {
            "type": "integer",
            "description": "Upper bound on tokens generated per request; a positive integer.",
            "minimum": 1,
            "maximum": 1000000,
        },
    },
}


def test_choices_follow_the_plan_and_the_global(catalog: catalog_.Catalog) -> None:
    assert doc(merge(catalog, plan="free"), "openai")["choices"] == {
        "overrides_allowed": False,
        "fields": {},
    }
    assert doc(merge(catalog, plan="enterprise"), "openai")["choices"]["fields"] == {}
    image = doc(merge(catalog), "image_generation")["choices"]["fields"]
    assert image["service"]["enum"] == ["openai", "runware"]  # from the schema
    assert image["sizes"]["additionalProperties"]["pattern"] == "^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
    narrowed = builders.global_body()
    narrowed["spec"]["integrations"]["openai"]["allowedValues"] = {
        "model": ["gpt-4o-mini", "gpt-4.1"]
    }
    model = doc(merge(catalog, global_body=narrowed), "openai")["choices"]["fields"]["model"]
    assert model["enum"] == ["gpt-4o-mini", "gpt-4.1"]


def test_every_offered_choice_is_accepted(catalog: catalog_.Catalog) -> None:
    """What ``choices`` offers, the merge applies: the dropdown and slider never lie."""
    for type_ in ("openai", "image_generation"):
        fields = doc(merge(catalog), type_)["choices"]["fields"]
        for field, schema in fields.items():
            for value in schema.get("enum", ()):
                applied = doc(merge(catalog, {type_: {field: value}}), type_)
                assert applied[field] == value and applied["overridden"] == [field], (field, value)
    for temperature in (0, 2):
        assert doc(merge(catalog, {"openai": {"temperature": temperature}}), "openai")[
            "overridden"
        ] == ["temperature"]
    assert doc(merge(catalog, {"openai": {"temperature": 2.1}}), "openai")["overridden"] == []


# Rule 1 and 6: override if present and allowed, else the default; no object = defaults.


def test_new_account_gets_every_default(catalog: catalog_.Catalog) -> None:
    result = merge(catalog)
    assert doc(result, "openai") == {
        "id": "openai",
        "enabled": True,
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "max_tokens": 8192,
        "using_global": True,
        "overridden": [],
        "choices": OPENAI_CHOICES,
    }
    assert result.findings == ()


def test_override_wins_field_by_field(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"model": "gpt-4o", "temperature": 0.8}})
    openai = doc(result, "openai")
    assert (openai["model"], openai["temperature"], openai["max_tokens"]) == ("gpt-4o", 0.8, 8192)
    assert openai["overridden"] == ["model", "temperature"]
    assert doc(result, "image_generation")["using_global"] is True


def test_seed_account_456(catalog: catalog_.Catalog) -> None:
    openai = doc(merge(catalog, {"openai": {"model": "gpt-4.1", "max_tokens": 4000}}), "openai")
    assert (openai["model"], openai["temperature"], openai["max_tokens"]) == ("gpt-4.1", 0.7, 4000)


def test_map_field_is_replaced_whole(catalog: catalog_.Catalog) -> None:
    # One name per setting: sizes is one field, so an override replaces the map.
    image = doc(
        merge(catalog, {"image_generation": {"sizes": {"inline": "512x512"}}}), "image_generation"
    )
    assert image["sizes"] == {"inline": "512x512"}


# Rule 2: using_global exactly when nothing is applied.


@pytest.mark.parametrize(
    ("overrides", "kwargs", "expected"),
    [
        pytest.param(None, {}, True, id="no-object"),
        pytest.param({"openai": {}}, {}, True, id="empty-overrides"),
        pytest.param({"openai": {"model": "gpt-4o"}}, {"is_active": False}, True, id="inactive"),
        pytest.param({"openai": {"model": "gpt-4o"}}, {"plan": "free"}, True, id="free-plan"),
        pytest.param({"openai": {"apiKey": "x", "temperature": 9}}, {}, True, id="all-rejected"),
        pytest.param({"openai": {"model": "gpt-4o-mini"}}, {}, False, id="same-as-default"),
    ],
)
def test_using_global(
    catalog: catalog_.Catalog, overrides: Any, kwargs: dict[str, Any], expected: bool
) -> None:
    openai = doc(merge(catalog, overrides, **kwargs), "openai")
    assert openai["using_global"] is expected
    assert (openai["overridden"] == []) is expected


# Rule 3: only overridable fields; the rest stripped by name, keys flagged.


@pytest.mark.parametrize(
    "name",
    [
        "apiKey",
        "api_key",
        "openai_api_key",
        "dalle_api_key",
        "API-KEY",
        "clientSecret",
        "db_password",
        "access_token",
        "Bearer",
        "PASSWORD",
    ],
)
def test_credential_like_fields_are_stripped_and_flagged(
    catalog: catalog_.Catalog, name: str
) -> None:
    result = merge(catalog, {"openai": {name: "sk-FAKE-0123456789", "model": "gpt-4o"}})
    assert "sk-FAKE" not in json.dumps(result.data)
    assert doc(result, "openai")["overridden"] == ["model"]  # the rest still applies
    [finding] = result.findings
    assert finding.reason is Reason.CREDENTIAL_STRIPPED
    assert name in finding.message and "sk-FAKE" not in finding.message
    assert finding.path == ("spec", "overrides", name)


def test_other_unknown_fields_are_stripped_by_name(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"top_p": 0.5, "temperature": 1.0}})
    assert doc(result, "openai")["overridden"] == ["temperature"]
    assert "top_p" not in doc(result, "openai")
    [finding] = result.findings
    assert finding.reason is Reason.FIELD_STRIPPED and "top_p" in finding.message


def test_max_tokens_is_not_a_credential(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"max_tokens": 100}})
    assert doc(result, "openai")["max_tokens"] == 100 and result.findings == ()


def test_nested_credential_names_reject_the_field(catalog: catalog_.Catalog) -> None:
    result = merge(
        catalog, {"image_generation": {"sizes": {"api_key": "1024x1024"}, "image_style": "natural"}}
    )
    image = doc(result, "image_generation")
    assert image["overridden"] == ["image_style"]
    assert reasons(result) == ["CredentialFieldStripped"]


def test_key_shaped_values_never_reach_outputs(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"image_generation": {"model": "sk-proj-FAKEKEY0123456789"}})
    assert "FAKEKEY" not in json.dumps(result.data)
    assert reasons(result) == ["CredentialFieldStripped"]


# Rule 4: a bad value rejects that field only.


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("temperature", 2.5, "<= 2"),
        ("temperature", -0.1, ">= 0"),
        ("temperature", "hot", "type number"),
        ("max_tokens", 0, ">= 1"),
        ("max_tokens", 1.5, "type integer"),
        ("model", "gpt-5", "allowed values"),
        ("model", 4, "type string"),
    ],
)
def test_rejected_values(catalog: catalog_.Catalog, field: str, value: Any, why: str) -> None:
    result = merge(
        catalog,
        {"openai": {field: value, "max_tokens" if field != "max_tokens" else "temperature": 1}},
    )
    openai = doc(result, "openai")
    assert field not in openai["overridden"] and len(openai["overridden"]) == 1
    [finding] = result.findings
    assert finding.reason is Reason.VALUE_REJECTED and why in finding.message
    assert finding.is_error


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service", "midjourney"),
        ("image_quality", "ultra"),
        ("sizes", {"featured": "big"}),
        ("sizes", {}),
    ],
)
def test_rejected_image_values(catalog: catalog_.Catalog, field: str, value: Any) -> None:
    result = merge(catalog, {"image_generation": {field: value}})
    assert doc(result, "image_generation")["using_global"] is True
    assert reasons(result) == ["ValueRejected"]


def test_rejection_messages_never_quote_values(catalog: catalog_.Catalog) -> None:
    secretish = "x" * 200 + "-VALUE-MARKER"
    result = merge(catalog, {"openai": {"model": secretish}})
    assert all("VALUE-MARKER" not in f.message for f in result.findings)


# Rule 5: plans.


def test_free_plan_applies_nothing_and_says_so(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"model": "gpt-4o"}}, plan="free")
    assert doc(result, "openai")["model"] == "gpt-4o-mini"
    [finding] = result.findings
    assert finding.reason is Reason.PLAN_FORBIDS and not finding.is_error


def test_unknown_plan_may_not_override(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"model": "gpt-4o"}}, plan="platinum")
    assert doc(result, "openai")["using_global"] is True
    assert reasons(result) == ["UnknownPlan"]


def test_free_plan_still_reports_key_attempts(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"apiKey": "sk-x"}}, plan="free")
    assert set(reasons(result)) == {"PlanForbidsOverrides", "CredentialFieldStripped"}


def test_inactive_override_is_a_note(catalog: catalog_.Catalog) -> None:
    result = merge(catalog, {"openai": {"model": "gpt-4o"}}, is_active=False)
    assert reasons(result) == ["OverrideInactive"] and not result.has_errors


# Rule 7: global changes reach accounts that do not override the field.


def test_global_change_reaches_non_overriders_only(catalog: catalog_.Catalog) -> None:
    changed = builders.global_body()
    changed["spec"]["integrations"]["openai"]["defaults"]["model"] = "gpt-4.1"
    follower = doc(merge(catalog, {"openai": {"temperature": 0.9}}, global_body=changed), "openai")
    keeper = doc(merge(catalog, {"openai": {"model": "gpt-4o"}}, global_body=changed), "openai")
    assert follower["model"] == "gpt-4.1" and keeper["model"] == "gpt-4o"


def test_disabled_integration_is_rendered_disabled(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    body["spec"]["integrations"]["openai"]["enabled"] = False
    assert doc(merge(catalog, global_body=body), "openai")["enabled"] is False


def test_integration_missing_from_global_is_not_rendered(catalog: catalog_.Catalog) -> None:
    body = builders.global_body()
    del body["spec"]["integrations"]["image_generation"]
    result = merge(catalog, {"image_generation": {"model": "x"}}, global_body=body)
    assert set(result.data) == {"openai.json"}
    assert reasons(result) == ["IntegrationNotConfigured"]


# Rule 8: deterministic bytes.


def test_output_is_canonical_and_stable(catalog: catalog_.Catalog) -> None:
    a = merge(catalog, {"openai": {"temperature": 0.8, "model": "gpt-4o"}})
    b = merge(catalog, {"openai": {"model": "gpt-4o", "temperature": 0.8}})
    assert a.data == b.data and a.content_hash == b.content_hash
    text = a.data["openai.json"]
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n"


def test_json_is_the_canonical_json_of_the_document(catalog: catalog_.Catalog) -> None:
    """The shared, pre-encoded choices change no byte, whatever the field names."""
    for plan in ("pro", "free"):
        result = merge(catalog, {"openai": {"model": "gpt-4o"}}, plan=plan)
        for integration in result.integrations:
            assert integration.json() == rendering.canonical_json(integration.document())
    choices = {"overrides_allowed": True, "fields": {"aspect": {"type": "number"}}}
    before_choices = merging.EffectiveIntegration(
        type="x",
        enabled=True,
        values={"aspect": 1.5},  # sorts before "choices": the whole document is encoded
        overridden=(),
        choices=choices,
        choices_json=rendering.canonical_json(choices)[:-1],
    )
    assert before_choices.json() == rendering.canonical_json(before_choices.document())
    assert before_choices.json().startswith('{"aspect":1.5,"choices":')


def test_an_integration_without_overrides_is_built_once_per_global(
    catalog: catalog_.Catalog,
) -> None:
    """Every account applying no override of a type shares one rendered integration, the
    same bytes as built alone; a new global, or an override, is built anew."""
    g = builders.parsed(catalog, builders.global_body())
    first, second = (
        merging.merge_account(catalog, g, builders.parsed(catalog, builders.account_body()), {})
        for _ in range(2)
    )
    for a, b in zip(first.integrations, second.integrations, strict=True):
        assert a is b
        fresh = merging._effective(
            a.type, catalog.integrations[a.type], g.integrations[a.type], {}, True
        )
        assert a == fresh and a.json() == fresh.json()
        assert a.json() == rendering.canonical_json(a.document())
    again = builders.parsed(catalog, builders.global_body())  # an equal, new global
    third = merging.merge_account(
        catalog, again, builders.parsed(catalog, builders.account_body()), {}
    )
    assert third.integrations[0] is not first.integrations[0]
    assert third.data == first.data
    custom = merge(catalog, {"openai": {"temperature": 0.9}})
    openai = next(i for i in custom.integrations if i.type == "openai")
    assert not openai.rendered and openai.values["temperature"] == 0.9


def test_no_message_goes_on_in_lower_case_after_a_full_stop(catalog: catalog_.Catalog) -> None:
    """ "…looks like an API key. platform keys cannot…" read as a typo: a full stop starts a
    sentence with a capital, or the clauses are joined by "; " instead."""
    result = merge(
        catalog,
        {
            "image_generation": {"sizes": {"api_key": "1024x1024"}, "service": "nope"},
            "openai": {"model": "sk-proj-FAKEKEY0123456789", "apiKey": "x", "top_p": 1},
        },
        plan="free",
    )
    messages = [f.message for f in result.findings]
    assert len(messages) == 6
    for message in messages:
        assert not re.search(r"\. [a-z]", message), message
    assert any("API key. Platform keys cannot be set" in m for m in messages)
    assert any("key-like field. Platform keys cannot be set" in m for m in messages)


def test_unknown_plan_is_reported_without_overrides_too(catalog: catalog_.Catalog) -> None:
    """Issue 20, break 5: it gets no keys either, so it is said even with nothing to apply."""
    result = merge(catalog, {}, plan="platinum")
    [finding] = result.findings
    assert finding.reason is Reason.UNKNOWN_PLAN and not finding.is_error
    assert "'platinum'" in finding.message and "no platform keys" in finding.message
    assert finding.path == ("spec", "plan")


def test_an_undeclared_plan_projects_no_keys() -> None:
    global_ = declarations.GlobalSettings("default", {"free": False, "pro": True}, {})
    assert global_.projects_keys("pro") and global_.projects_keys("free")
    assert not global_.projects_keys("starter")
    keyless = dataclasses.replace(global_, keyless_plans=frozenset({"free"}))
    assert not keyless.projects_keys("free") and keyless.projects_keys("pro")


def test_an_integral_float_for_an_integer_field_is_written_as_an_integer(
    catalog: catalog_.Catalog,
) -> None:
    # YAML reads ``max_tokens: 100.0`` as a float and JSON Schema calls it an integer; the
    # API server stores 100, and the output says "type":"integer": both modes write 100.
    spec = builders.GLOBAL_SPEC["integrations"]
    body = builders.global_body(
        integrations={
            **spec,
            "openai": {
                **spec["openai"],
                "defaults": {"model": "gpt-4o-mini", "temperature": 1.0, "max_tokens": 4096.0},
                "allowedValues": {"max_tokens": [100.0, 4096.0]},
            },
        }
    )
    defaults = doc(merge(catalog, global_body=body), "openai")
    assert defaults["max_tokens"] == 4096 and type(defaults["max_tokens"]) is int
    assert defaults["temperature"] == 1.0  # a number field keeps its float
    assert [type(v) for v in defaults["choices"]["fields"]["max_tokens"]["enum"]] == [int, int]
    text = merge(catalog, {"openai": {"max_tokens": 100.0}}, global_body=body).data["openai.json"]
    assert '"max_tokens":100,' in text
    overridden = doc(merge(catalog, {"openai": {"max_tokens": 100.0}}, global_body=body), "openai")
    assert type(overridden["max_tokens"]) is int and overridden["overridden"] == ["max_tokens"]
