"""CEL text for the admission policies, translated from JSON Schema and the core's patterns.

Each function returns a CEL boolean expression over another expression. The
translation covers the keywords the integration schemas use and refuses any
other (``SchemaError``), so a new integration with a keyword this module does
not know fails ``make manifests`` instead of being admitted unchecked. The
regular expressions are the core's own (``controller.core.credentials``),
written in the subset Python ``re`` and CEL's RE2 share; both search
unanchored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from controller.core import credentials, errors

# Keywords that describe rather than constrain.
_DESCRIPTIVE = frozenset({"description", "title", "default", "examples", "$comment"})
_HANDLED = frozenset(
    {
        "type",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "additionalProperties",
    }
)


def string(text: str) -> str:
    """A CEL string literal (a JSON string literal is one)."""
    return json.dumps(text)


def strings(items: Iterable[Any]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def key_shaped(expr: str) -> str:
    """``expr`` is a string shaped like a provider key: ``credentials.looks_like_key_value``."""
    prefixes = [f"{expr}.matches({string(p)})" for p in credentials.KEY_PREFIX_PATTERNS]
    run = " && ".join(
        f"{expr}.matches({string(p)})"
        for p in (credentials.KEY_RUN_PATTERN, *credentials.KEY_MIXED_PATTERNS)
    )
    return f"(type({expr}) == string && ({' || '.join([*prefixes, f'({run})'])}))"


def endpoint_userinfo(expr: str) -> str:
    """``expr`` (a string) holds userinfo: the first test of ``credentials.endpoint_problem``."""
    return f"{expr}.contains('@')"


def endpoint_escape(expr: str) -> str:
    """``expr`` (a string) holds a percent escape: the second test of
    ``credentials.endpoint_problem`` (CEL has no URL decoding, so none is admitted)."""
    return f"{expr}.contains('%')"


def endpoint_key(expr: str) -> str:
    """``expr`` (a string) holds a key: the third test of ``credentials.endpoint_problem``."""
    separator = string(credentials.ENDPOINT_SEPARATOR)
    return key_shaped(f"{expr}.replace({separator}, ' ')")


def folded(expr: str) -> str:
    """``credentials.fold`` in CEL (ASCII lowercase: names that matter are ASCII)."""
    out = f"{expr}.lowerAscii()"
    for separator in credentials.FOLD_SEPARATORS:
        out += f".replace({string(separator)}, '')"
    return out


def credential_name(expr: str, exempt: Iterable[str]) -> str:
    """``expr`` reads like a key field: ``credentials.looks_like_credential``."""
    name = folded(expr)
    pattern = string(credentials.FOLDED_CREDENTIAL_PATTERN)
    exempt_folded = strings(sorted({credentials.fold(e) for e in exempt}))
    return f"({name}.matches({pattern}) && !({name} in {exempt_folded}))"


def _number(value: Any) -> str:
    # Compared as doubles: a JSON number may arrive as a CEL int or double.
    return repr(float(value))


def valid(schema: Mapping[str, Any], expr: str, depth: int = 0) -> str:
    """``expr`` is valid against ``schema`` (JSON Schema, the subset integrations use)."""
    unknown = set(schema) - _HANDLED - _DESCRIPTIVE
    if unknown:
        raise errors.SchemaError(
            f"schemas: no admission rule for keyword(s) {', '.join(sorted(unknown))}"
        )
    kind = schema.get("type")
    parts: list[str] = []
    if kind == "string":
        parts.append(f"type({expr}) == string")
        if "minLength" in schema:
            parts.append(f"size({expr}) >= {int(schema['minLength'])}")
        if "maxLength" in schema:
            parts.append(f"size({expr}) <= {int(schema['maxLength'])}")
        if "pattern" in schema:
            parts.append(f"{expr}.matches({string(schema['pattern'])})")
    elif kind in ("number", "integer"):
        parts.append(f"(type({expr}) == int || type({expr}) == double)")
        for keyword, op in (
            ("minimum", ">="),
            ("maximum", "<="),
            ("exclusiveMinimum", ">"),
            ("exclusiveMaximum", "<"),
        ):
            if keyword in schema:
                parts.append(f"double({expr}) {op} {_number(schema[keyword])}")
        if kind == "integer":
            # JSON Schema counts 5.0 as an integer; so does the core. The
            # bounds above come first, so int() never sees an out-of-range double.
            parts.append(f"(type({expr}) == int || double(int({expr})) == {expr})")
    elif kind == "boolean":
        parts.append(f"type({expr}) == bool")
    elif kind == "object":
        parts.append(f"type({expr}) == map")
        if "minProperties" in schema:
            parts.append(f"size({expr}) >= {int(schema['minProperties'])}")
        if "maxProperties" in schema:
            parts.append(f"size({expr}) <= {int(schema['maxProperties'])}")
        names = schema.get("propertyNames", {})
        if set(names) - {"pattern"}:
            raise errors.SchemaError("schemas: propertyNames supports only pattern")
        values = schema.get("additionalProperties")
        if not isinstance(values, Mapping):
            raise errors.SchemaError(
                "schemas: an overridable object must be a map (additionalProperties: a schema)"
            )
        var = f"k{depth}"
        inner = [valid(values, f"{expr}[{var}]", depth + 1)]
        if "pattern" in names:
            inner.insert(0, f"{var}.matches({string(names['pattern'])})")
        parts.append(f"{expr}.all({var}, {' && '.join(inner)})")
    else:
        raise errors.SchemaError(f"schemas: no admission rule for type {kind!r}")
    if "enum" in schema:
        parts.append(f"{expr} in {strings(schema['enum'])}")
    return "(" + " && ".join(parts) + ")"


def holds_key(schema: Mapping[str, Any], expr: str, depth: int = 0) -> str | None:
    """A key-shaped string anywhere in ``expr`` (values, and names of maps); None when the
    schema has no string in it."""
    kind = schema.get("type")
    if kind == "string":
        return key_shaped(expr)
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, Mapping):
        var = f"n{depth}"
        inner = holds_key(values, f"{expr}[{var}]", depth + 1)
        test = key_shaped(var) if inner is None else f"{key_shaped(var)} || {inner}"
        return f"(type({expr}) == map && {expr}.exists({var}, {test}))"
    return None


def names_holding_credentials(
    schema: Mapping[str, Any], expr: str, exempt: Iterable[str], depth: int = 0
) -> str | None:
    """A key-like name (``credential_name``) among the names of the maps in ``expr``; None
    when the schema has no map. Mirrors the core's check of nested names."""
    values = schema.get("additionalProperties")
    if schema.get("type") != "object" or not isinstance(values, Mapping):
        return None
    var = f"c{depth}"
    inner = names_holding_credentials(values, f"{expr}[{var}]", exempt, depth + 1)
    test = credential_name(var, exempt) + ("" if inner is None else f" || {inner}")
    return f"(type({expr}) == map && {expr}.exists({var}, {test}))"


def describe(schema: Mapping[str, Any]) -> str:
    """What ``schema`` allows, in words, for a refusal message (never the refused value)."""
    kind = schema.get("type")
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if kind == "string":
        text = "a string"
        if "minLength" in schema or "maxLength" in schema:
            text += (
                f" of {schema.get('minLength', 0)} to {schema.get('maxLength', 'any')} characters"
            )
        if "pattern" in schema:
            text += f" matching {schema['pattern']}"
        return text
    if kind in ("number", "integer"):
        text = "a number" if kind == "number" else "an integer"
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and high is not None:
            return f"{text} from {low} to {high}"
        if low is not None:
            return f"{text} of at least {low}"
        return f"{text} of at most {high}" if high is not None else text
    if kind == "boolean":
        return "true or false"
    if kind == "object":
        values = schema.get("additionalProperties")
        count = f"{schema.get('minProperties', 0)} to {schema.get('maxProperties', 'any')}"
        names = schema.get("propertyNames", {}).get("pattern")
        text = f"a map of {count} names" + (f" matching {names}" if names else "")
        if isinstance(values, Mapping):
            text += " to " + describe(values)
            if values.get("description"):
                text += f" ({str(values['description']).rstrip('.')})"
        return text
    return "a valid value"
