"""How the controller recognises an attempt to put a platform key where it does not belong.

Keys are only ever referenced from GlobalIntegrationSettings ``credentials``; a
field or value anywhere else that looks like one is refused and reported by
name only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

# Names are compared with case and separators folded away, so that apiKey,
# api_key, API-KEY and openai_api_key all look alike.
_CREDENTIAL_WORDS = (
    "apikey",
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "privatekey",
    "accesskey",
    "bearer",
)

# The same rule as a regular expression over the raw name, for places that
# cannot fold (CEL rules in the CRDs). Kept next to the words it mirrors.
CREDENTIAL_NAME_PATTERN = r"(?i)(api[-_]?key|secret|password|passwd|token|credential|private[-_]?key|access[-_]?key|bearer)"

# Values shaped like the keys providers hand out. A key pasted into an
# overridable field (say, ``model``) must not reach a ConfigMap either.
_KEY_PREFIX = re.compile(r"^(sk|rk|pk)[-_]")  # OpenAI-style and Stripe-style keys
# Long unbroken base64-like runs with mixed case and digits. Hyphens are left
# out so that long model names (text-embedding-3-large) are not caught.
_KEY_BODY = re.compile(r"^[A-Za-z0-9+/_]{32,}={0,2}$")


def fold(name: str) -> str:
    return name.replace("-", "").replace("_", "").replace(".", "").lower()


def looks_like_credential(name: str, exempt: Iterable[str] = ()) -> bool:
    """True when ``name`` reads like a key field, unless it is a known overridable field (``max_tokens``)."""
    folded = fold(name)
    if folded in {fold(e) for e in exempt}:
        return False
    return any(word in folded for word in _CREDENTIAL_WORDS)


def looks_like_key_value(value: Any) -> bool:
    """True for strings shaped like provider API keys."""
    if not isinstance(value, str):
        return False
    if _KEY_PREFIX.search(value):
        return True
    return (
        bool(_KEY_BODY.match(value))
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


def printable_name(name: str) -> str:
    """A field or object name safe to print: one shaped like a key is never echoed."""
    return "<name that looks like a key>" if looks_like_key_value(name) else name


def nested_names(value: Any) -> Iterator[str]:
    """Every mapping key anywhere inside ``value`` (a decoded JSON/YAML value)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                yield str(key)
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)


def nested_values(value: Any) -> Iterator[Any]:
    """Every scalar anywhere inside ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item
