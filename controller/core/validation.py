"""Schema problems as messages a person can act on, without ever quoting a value.

jsonschema's own messages embed the offending instance (``'sk-...' is too
long``). A value may be a pasted key, so messages here are built from the
schema keyword alone and located by path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from controller.core import credentials, patterns

if TYPE_CHECKING:
    # Imported when a validator is first built (``Validator``): jsonschema is ~70 ms of
    # start-up that a `reconcile` with nothing changed, which validates nothing, need not pay.
    import jsonschema

Path = tuple[str | int, ...]


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not patterns.search(pattern, instance):
        import jsonschema

        yield jsonschema.ValidationError("does not match its pattern")


def _pattern_properties(
    validator: Any, properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            if patterns.search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


# Draft 2020-12 with patterns read as JSON Schema and admission read them (core/patterns.py),
# not as Python's ``re.search`` would: every schema check in the controller uses this one,
# as ``validation.Validator`` (built on first use, see ``__getattr__``).
if TYPE_CHECKING:
    Validator: type[jsonschema.Draft202012Validator]


@functools.cache
def _validator_class() -> type[jsonschema.Draft202012Validator]:
    import jsonschema

    extended: type[jsonschema.Draft202012Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # the stubs leave extend untyped
        jsonschema.Draft202012Validator,
        {"pattern": _pattern, "patternProperties": _pattern_properties},
    )
    return extended


def __getattr__(name: str) -> type[jsonschema.Draft202012Validator]:
    if name == "Validator":
        return _validator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_patterns(schema: Any) -> None:
    """Compile every ``pattern`` in ``schema`` now: a bad one is a schema error at load."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.compiled(node["pattern"])
            for key in node.get("patternProperties", {}):
                patterns.compiled(key)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


@dataclasses.dataclass(frozen=True)
class Problem:
    path: Path  # where in the instance; the file adapter turns it into a line
    message: str


def dotted(path: Path) -> str:
    """``spec.overrides.model``; every printed path goes through here, so names are redacted here."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = credentials.printable_name(part)
            out += f".{name}" if out else name
    return out


# No declaration needs more than a few levels (spec.overrides.sizes.<name>);
# the schema validator, the merge and a deep copy all recurse, and an object
# nested a thousand levels deep (stored by a cluster without the admission
# policy) must be refused here, not crash the reader.
MAX_DEPTH = 32


def too_deep(instance: Any, limit: int = MAX_DEPTH) -> Path | None:
    """The path of the first container nested deeper than ``limit``, or None. Iterative."""
    stack: list[tuple[Any, Path]] = [(instance, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > limit:
            return path[:limit]
        if isinstance(node, dict):
            stack.extend((v, (*path, str(k))) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return None


def problems(
    validator: jsonschema.protocols.Validator, instance: Any, fast_validator: Any = None
) -> list[Problem]:
    """Everything wrong with ``instance``. ``fast_validator`` (jsonschema_rs) answers the
    common case, a valid body, without building error objects; messages always
    come from ``validator``."""
    fast_says_valid = fast_validator is None or fast_validator.is_valid(instance)
    if fast_validator is not None and fast_says_valid:
        # jsonschema_rs refuses NaN wherever a number is typed, and only typed
        # values ever reach an output; untyped NaN is left for JSON to refuse.
        return []
    found: list[Problem] = list(_non_finite(instance, ()))
    for error in validator.iter_errors(instance):
        found.extend(_describe(error))
    if not found and not fast_says_valid:
        # The two engines disagree: never let through what one of them refuses.
        found.append(Problem((), "is not valid"))
    return sorted(set(found), key=lambda p: (tuple(str(x) for x in p.path), p.message))


def _non_finite(instance: Any, path: Path) -> Iterator[Problem]:
    # JSON has no NaN or Infinity, and range checks pass NaN silently.
    if isinstance(instance, float) and not math.isfinite(instance):
        yield Problem(path, _at(path, "must be a finite number"))
    elif isinstance(instance, dict):
        for key, value in instance.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            yield from _non_finite(value, (*path, index))


def _at(path: Path, text: str) -> str:
    return f"{dotted(path)}: {text}" if path else text


def _describe(error: jsonschema.ValidationError) -> Iterator[Problem]:
    path: Path = tuple(error.absolute_path)
    keyword = error.validator
    expected: Any = error.validator_value
    instance = error.instance
    if keyword == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema.get("properties", {}))
        for name in sorted(set(instance) - known):
            yield Problem((*path, name), _at((*path, name), "unknown field"))
        return
    if keyword == "required" and isinstance(instance, dict):
        for name in expected:
            if name not in instance:
                yield Problem(path, _at(path, f"missing required field {name!r}"))
        return
    if keyword == "propertyNames":
        yield Problem(path, _at(path, "has a key that is not a valid name"))
        return
    yield Problem(path, _at(path, _expectation(str(keyword), expected)))


def _expectation(keyword: str, expected: Any) -> str:
    match keyword:
        case "type":
            kinds = expected if isinstance(expected, list) else [expected]
            return "must be of type " + " or ".join(kinds)
        case "minimum":
            return f"must be >= {expected}"
        case "maximum":
            return f"must be <= {expected}"
        case "exclusiveMinimum":
            return f"must be > {expected}"
        case "exclusiveMaximum":
            return f"must be < {expected}"
        case "enum":
            return "must be one of " + ", ".join(json.dumps(v) for v in expected)
        case "const":
            return f"must be {json.dumps(expected)}"
        case "pattern":
            return f"must match the pattern {expected}"
        case "minLength":
            return f"must be at least {expected} characters long"
        case "maxLength":
            return f"must be at most {expected} characters long"
        case "minItems":
            return f"must have at least {expected} items"
        case "maxItems":
            return f"must have at most {expected} items"
        case "minProperties":
            return f"must have at least {expected} entr{'y' if expected == 1 else 'ies'}"
        case "maxProperties":
            return f"must have at most {expected} entries"
        case "uniqueItems":
            return "must not repeat items"
        case _:
            return f"is not valid ({keyword})"
