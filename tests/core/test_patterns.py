"""Schema patterns give the core the verdict JSON Schema (ECMA-262) and admission (RE2) give.

Python's ``re.search`` lets ``$`` match before a final newline; the schemas' engines do not
(breakit: ``model: "dall-e-3\\n"`` passed file mode and was refused at admission). The
reference here is jsonschema-rs, an ECMA-262 engine independent of the core's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import schemafiles
from controller.core import errors, patterns, validation
from tests.core import builders

CATALOG = schemafiles.load_catalog()


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


SCHEMA_PATTERNS = sorted(
    {p for kind in CATALOG.kinds.values() for p in _patterns(kind.schema)}
    | {p for t in CATALOG.integrations.values() for p in _patterns(t.schema)}
)
ENDINGS = ["", "\n", "\r\n", "\r", "\u2028", "\u2029", "\x85", " ", "\t", "\u00a0"]


def test_every_schema_pattern_is_anchored_at_the_end() -> None:
    # The property below is about "$": it must hold for every pattern the schemas have.
    assert len(SCHEMA_PATTERNS) >= 5
    assert all(p.endswith("$") for p in SCHEMA_PATTERNS)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(SCHEMA_PATTERNS), st.sampled_from(ENDINGS))
def test_the_core_and_the_schema_agree_with_a_trailing_line_break(
    data: st.DataObject, pattern: str, ending: str
) -> None:
    # from_regex follows Python's re, so it proposes "value\n" for "^...$" itself.
    text = data.draw(st.from_regex(pattern)) + ending
    reference = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    assert patterns.search(pattern, text) == reference.is_valid(text), repr(text)
    if text.endswith(("\n", "\r")):
        assert not patterns.search(pattern, text), repr(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "dall-e-3\n"),
        ("sizes", {"featured": "1024x1024\n"}),
        ("sizes", {"featured\n": "1024x1024"}),
    ],
)
def test_a_field_with_a_trailing_newline_is_refused(field: str, value: Any) -> None:
    assert CATALOG.integrations["image_generation"].check(field, value)


def test_an_account_namespace_with_a_trailing_newline_is_refused() -> None:
    body = builders.account_body()
    body["spec"]["namespace"] += "\n"
    kind = CATALOG.kinds["Account"]
    assert validation.problems(kind.validator, body, kind.fast_validator)
    assert validation.problems(kind.validator, body)  # the message path alone refuses it too


@pytest.mark.parametrize(
    ("pattern", "text", "verdict"),
    [
        (r"^\d$", "\u0663", False),  # ECMA and RE2: \d is ASCII
        (r"^\w+$", "é", False),
        (r"^[^\s@]+$", "a\u00a0b", False),  # ECMA's \s holds no-break space
        (r"^[^\s@]+$", "a-b", True),
        (r"^[a$]+$", "a$", True),  # $ in a class is a character
        (r"^\S+$", "ab", True),
    ],
)
def test_pattern_classes_follow_ecma(pattern: str, text: str, verdict: bool) -> None:
    assert patterns.search(pattern, text) is verdict


@pytest.mark.parametrize("pattern", [r"^[]a]$", r"^[^]a]$", r"^[\S]$", "^(a$"])
def test_a_pattern_the_engines_read_differently_is_a_schema_error(pattern: str) -> None:
    with pytest.raises(errors.SchemaError):
        patterns.compiled(pattern)


def test_when_the_engines_disagree_the_value_is_refused() -> None:
    class Refusing:
        def is_valid(self, instance: Any) -> bool:
            return False

    kind = CATALOG.kinds["Account"]
    assert validation.problems(kind.validator, builders.account_body(), Refusing())
