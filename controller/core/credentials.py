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

# The same rule for places that cannot call ``fold`` (CEL in the admission
# policies): applied to a name folded the same way (lowercased, separators
# removed), it matches exactly when ``looks_like_credential`` does.
FOLDED_CREDENTIAL_PATTERN = "(" + "|".join(_CREDENTIAL_WORDS) + ")"
FOLD_SEPARATORS = ("-", "_", ".")

# Values shaped like the keys providers hand out. A key pasted into an
# overridable field (say, ``model``) must not reach a ConfigMap either.
#
# These patterns are the one source for both the core (``re.search``) and the
# admission policies (CEL ``matches``, RE2: an unanchored search too), so they
# use only syntax the two engines share: no lookaround, no backreferences.
# A key may sit anywhere in the value (``org/sk-...``, a leading space), so
# none is anchored at the start.
KEY_PREFIX_PATTERNS = (
    # OpenAI/Anthropic-style (sk-, sk-proj-, sk-ant-), restricted and Stripe-style
    # keys, at the start or after a non-alphanumeric (not inside "task-1").
    r"(^|[^A-Za-z0-9])(sk|rk|pk)[-_][A-Za-z0-9]",
    r"AIza[0-9A-Za-z_-]{20,}",  # Google API keys, which hold hyphens
    r"(^|[^A-Za-z0-9])(ghp|gho|ghs|ghu|github_pat|glpat|xox[abprs])[-_][A-Za-z0-9]",
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"-----BEGIN [A-Z ]*PRIVATE KEY",
)
# Long unbroken base64-like runs, in a value that mixes case and digits. Hyphens
# are left out of the run so that long model names (text-embedding-3-large,
# Meta-Llama-3-70B-Instruct-Lite) are not caught; hyphenated keys are caught by
# their prefix above.
KEY_RUN_PATTERN = r"[A-Za-z0-9+/_]{32,}"
KEY_MIXED_PATTERNS = (r"[A-Z]", r"[a-z]", r"[0-9]")

_PREFIXES = tuple(re.compile(p) for p in KEY_PREFIX_PATTERNS)
_RUN = re.compile(KEY_RUN_PATTERN)
_MIXED = tuple(re.compile(p) for p in KEY_MIXED_PATTERNS)


def fold(name: str) -> str:
    for separator in FOLD_SEPARATORS:
        name = name.replace(separator, "")
    return name.lower()


def looks_like_credential(name: str, exempt: Iterable[str] = ()) -> bool:
    """True when ``name`` reads like a key field, unless it is a known overridable field (``max_tokens``)."""
    folded = fold(name)
    if folded in {fold(e) for e in exempt}:
        return False
    return any(word in folded for word in _CREDENTIAL_WORDS)


def looks_like_key_value(value: Any) -> bool:
    """True for strings shaped like provider API keys, wherever in the string the key sits."""
    if not isinstance(value, str):
        return False
    if any(p.search(value) for p in _PREFIXES):
        return True
    return bool(_RUN.search(value)) and all(p.search(value) for p in _MIXED)


# Why an endpoint (a credential's base URL) is refused, in words: the value is never quoted.
ENDPOINT_USERINFO = (
    "holds userinfo (user:password@host); the key belongs in the Secret, never in the URL"
)
ENDPOINT_KEY = (
    "looks like it holds an API key (in its host, path or query); the key belongs in the "
    "Secret, never in the URL"
)
ENDPOINT_ESCAPE = (
    "holds a percent escape (%XX), which could spell a key the other tests cannot see; a "
    "provider's base URL needs none"
)
# Path separators are not part of a key: a key is searched for segment by segment, so that
# a long gateway path is not one "run".
ENDPOINT_SEPARATOR = "/"


def endpoint_problem(url: Any) -> str | None:
    """Why ``url`` may not be a credential's endpoint, or None. An endpoint is shown (by
    origin) in statuses and sent on every check; a key in it would travel with both. The
    admission policy applies the same three tests (``celrules.endpoint_*``).

    A ``%`` escape is refused rather than decoded: CEL cannot decode one, so the
    admission policy could not see a key spelled ``%73%6b%2d...`` (which a gateway
    decodes back), and the two must refuse the same endpoints."""
    if not isinstance(url, str):
        return None
    if "@" in url:
        return ENDPOINT_USERINFO
    if "%" in url:
        return ENDPOINT_ESCAPE
    if looks_like_key_value(url.replace(ENDPOINT_SEPARATOR, " ")):
        return ENDPOINT_KEY
    return None


def printable_name(name: str) -> str:
    """A field or object name safe to print: one shaped like a key is never echoed."""
    return "<name that looks like a key>" if looks_like_key_value(name) else name


# A word of free text: what lies between spaces, quotes, brackets and path separators.
_WORD = re.compile(r"""[^\s/'"`,;:=()\[\]{}<>]+""")


def redact(text: str) -> str:
    """``text`` with every word shaped like a key replaced, as names are printed: for
    free text that quotes names (a log line, an Event), whoever wrote it."""
    return _WORD.sub(lambda m: printable_name(m.group()), text)


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
