"""``core.enforcement``, property-tested over globals, plans, overrides and request bodies drawn
at random: what goes upstream is always something the account could have chosen."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import catalog, decisions, declarations, enforcement, inventory, merging

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini")
VALUES = st.one_of(
    st.sampled_from(MODELS),
    st.floats(min_value=-1, max_value=3, allow_nan=False),
    st.integers(min_value=-5, max_value=20_000),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.just("sk-proj-AbCdEfGh0123456789AbCdEfGh"),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[merging.AccountResult, bool, dict[str, Any]]:
    allowed_models = draw(st.lists(st.sampled_from(MODELS), min_size=1, unique=True))
    default_model = draw(st.sampled_from(allowed_models))
    defaults = {
        "model": default_model,
        "temperature": draw(st.sampled_from([0.0, 0.7, 1.0, 2.0])),
        "max_tokens": draw(st.integers(min_value=1, max_value=10_000)),
    }
    restrict = draw(st.booleans())
    plan_may = draw(st.booleans())
    active = draw(st.booleans())
    override = draw(
        st.dictionaries(st.sampled_from(["model", "temperature", "max_tokens"]), VALUES, max_size=3)
    )
    global_ = declarations.GlobalSettings(
        name="default",
        plans={"plan": plan_may},
        integrations={
            "openai": declarations.IntegrationDefaults(
                type="openai",
                enabled=True,
                credentials={"apiKey": declarations.SecretKeyRef("keys", "openai")},
                defaults=defaults,
                allowed_values={"model": tuple(allowed_models)} if restrict else {},
            )
        },
    )
    account = declarations.Account("acct", "plan", "acct")
    overrides = [declarations.IntegrationSettings("acct", "openai", active, override)]
    inv = inventory.assemble([global_, account, *overrides])
    decision = decisions.decide(inv, "acct", inv.global_)
    assert enforcement.account_of(decision) is None
    result = merging.merge_account(CAT, global_, account, decision.overrides)
    body = draw(
        st.dictionaries(
            st.sampled_from(
                ["model", "temperature", "max_tokens", "max_completion_tokens", "n", "stream"]
            ),
            VALUES,
            max_size=6,
        )
    )
    return result, plan_may, body


def _catalog() -> catalog.Catalog:
    from controller import schemafiles

    return schemafiles.load_catalog()


CAT = _catalog()


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_what_goes_upstream_is_what_the_account_could_choose(
    scenario: tuple[merging.AccountResult, bool, dict[str, Any]],
) -> None:
    result, plan_may, body = scenario
    effective = next(i for i in result.integrations if i.type == "openai")
    answer = enforcement.chat(CAT, result, {"messages": [], **body})
    itype = CAT.integrations["openai"]
    if isinstance(answer, enforcement.Refusal):
        assert answer.status in (400, 403)
        assert answer.param in body
        assert answer.code == ("not_allowed" if answer.status == 403 else "invalid_value")
        assert answer.message.startswith(f"{answer.param}:")
        # Never quotes the value sent (a key pasted into a field stays out of the error).
        assert "sk-proj" not in answer.message
        return
    sent = answer.body
    assert sent["messages"] == []
    for param in ("model", "temperature"):
        if body.get(param) is None:
            assert sent[param] == effective.values[param]  # filled
        else:
            assert sent[param] == body[param]  # passed as asked
            assert itype.check(param, sent[param]) == []
            if not plan_may:
                assert sent[param] == effective.values[param]
    if body.get("model") is not None:
        assert sent["model"] in enforcement.models(result) or (
            plan_may and "enum" not in effective.choices["fields"]["model"]
        )
    for param in ("max_tokens", "max_completion_tokens"):
        if body.get(param) is not None:
            assert 1 <= sent[param] <= effective.values["max_tokens"]  # a ceiling, never cut
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        assert sent["max_tokens"] == effective.values["max_tokens"]
    # n choices would cost n times the ceiling: one per request. stream is a boolean.
    assert sent.get("n") in (None, 1) and not isinstance(sent.get("n"), bool)
    assert sent.get("stream") is None or isinstance(sent["stream"], bool)


def test_more_than_one_choice_per_request_is_refused() -> None:
    """``n`` multiplies what a request costs (``max_tokens`` is per choice): 2 is refused on
    both routes, for every plan, and a bool or a string is not a number."""
    global_ = declarations.GlobalSettings(
        name="default",
        plans={"plan": True},
        integrations={
            "openai": declarations.IntegrationDefaults(
                type="openai",
                enabled=True,
                credentials={"apiKey": declarations.SecretKeyRef("keys", "openai")},
                defaults={"model": "gpt-4o", "temperature": 0.7, "max_tokens": 100},
                allowed_values={},
            )
        },
    )
    account = declarations.Account("acct", "plan", "acct")
    result = merging.merge_account(CAT, global_, account, {})
    for n, status in ((2, 403), (10_000, 403), (True, 400), ("1", 400), (0, 400), (-1, 400)):
        refused = enforcement.chat(CAT, result, {"messages": [], "n": n})
        assert isinstance(refused, enforcement.Refusal), n
        assert (refused.status, refused.param) == (status, "n"), n
    assert isinstance(enforcement.chat(CAT, result, {"messages": [], "n": 1}), enforcement.Admitted)
    for stream in ("yes", 1, 0, []):
        refused = enforcement.chat(CAT, result, {"messages": [], "stream": stream})
        assert isinstance(refused, enforcement.Refusal) and refused.param == "stream", stream


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_plan_that_may_not_override_gets_the_defaults_only(
    scenario: tuple[merging.AccountResult, bool, dict[str, Any]],
) -> None:
    result, plan_may, _ = scenario
    effective = next(i for i in result.integrations if i.type == "openai")
    if not plan_may:
        assert effective.using_global
        other = next(m for m in MODELS if m != effective.values["model"])
        refused = enforcement.chat(CAT, result, {"model": other})
        assert isinstance(refused, enforcement.Refusal) and refused.status == 403
        assert enforcement.models(result) == (effective.values["model"],)
