"""The jsonschema-rs fast path must agree with jsonschema, whose messages the user sees."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import schemafiles
from tests.core import builders

CATALOG = schemafiles.load_catalog()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["pro", "openai", "gpt-4o", "1024x1024", "runware", "hd", "default", "Bad_Name"]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
bases = st.sampled_from(
    [
        builders.global_body(),
        builders.account_body(),
        builders.override_body(overrides={"model": "x"}),
    ]
)


def paths(body: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(body, dict):
        for key, value in body.items():
            found += paths(value, (*prefix, key))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    body = copy.deepcopy(draw(bases))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(body)[1:]))
        parent = body
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
    return body


@settings(max_examples=800, deadline=None)
@given(mutated())
def test_fast_and_full_validators_agree(body: dict[str, Any]) -> None:
    kind = CATALOG.kinds.get(str(body.get("kind")))
    if kind is None:
        return
    full = not any(True for _ in kind.validator.iter_errors(body))
    assert kind.fast_validator.is_valid(body) == full


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from(
        sorted((t, f) for t in CATALOG.integrations for f in CATALOG.integrations[t].fields)
    ),
    values,
)
def test_field_validators_agree(field: tuple[str, str], value: Any) -> None:
    itype = CATALOG.integrations[field[0]]
    full = not any(True for _ in itype.validators[field[1]].iter_errors(value))
    assert itype.fast_validators[field[1]].is_valid(value) == full
