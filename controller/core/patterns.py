"""Schema ``pattern`` regexes read the way JSON Schema (ECMA-262) and admission (RE2) read them.

JSON Schema patterns are ECMA-262 regexes; the CRDs and the admission policies check them
with RE2. Python's ``re`` reads the same text differently in ways that let a value through
that admission refuses: ``$`` also matches before a final newline (``"dall-e-3\\n"``), and
``\\d``/``\\w``/``\\b`` match any Unicode digit or letter. :func:`compiled` rewrites a pattern
so that Python gives the verdict of the other engines: ``$`` is the end of the input, the
classes are ASCII (as in ECMA and RE2), and ``\\s`` is ECMA's whitespace set.
"""

from __future__ import annotations

import functools
import re

from controller.core import errors

# ECMA-262 WhiteSpace and LineTerminator (what ``\s`` means in a JSON Schema pattern).
_ECMA_SPACE = (
    "\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
)


@functools.cache
def compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` (ECMA-262 syntax) as a Python regex with the same verdicts."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i + 1]
            i += 2
            if escape == "s":
                out.append(_ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]")
            elif escape == "S":
                if in_class:
                    raise errors.SchemaError(f"schemas: pattern {pattern}: \\S in a class")
                out.append(f"[^{_ECMA_SPACE}]")
            else:
                out.append("\\" + escape)
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            opening = "[^" if pattern.startswith("[^", i) else "["
            if pattern.startswith("]", i + len(opening)):
                # ECMA: [] matches nothing and [^] anything; Python and RE2 read a literal ].
                raise errors.SchemaError(f"schemas: pattern {pattern}: a class opening with ]")
            out.append(opening)
            i += len(opening)
            continue
        elif char == "$":
            char = r"\Z"  # ECMA and RE2: the end of the input, never before a final newline
        out.append(char)
        i += 1
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error as e:
        raise errors.SchemaError(f"schemas: pattern {pattern}: {e}") from e


def search(pattern: str, text: str) -> bool:
    """True when ``text`` matches ``pattern`` anywhere, as JSON Schema's ``pattern`` asks."""
    return compiled(pattern).search(text) is not None
