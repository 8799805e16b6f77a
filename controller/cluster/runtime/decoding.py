"""JSON from the API server, however deeply a tenant nested it.

An IntegrationSettings whose overrides nest ~1,200 levels (7 KB, stored by a
tenant on a cluster without the admission policy) makes ``json.loads`` raise
``RecursionError``: a list or watch holding it would fail every time, and the
operator would serve no account. ``loads`` falls back, on that error only, to
replacing every subtree deeper than ``FLATTEN_DEPTH`` with ``MARKER``; the
core then refuses that one object by name (``validation.too_deep``) and every
other account is served.
"""

from __future__ import annotations

import json
from typing import Any

FLATTEN_DEPTH = 64  # deeper than any valid declaration (validation.MAX_DEPTH is 32)
MARKER = "<nested too deeply>"


def loads(text: str | bytes) -> Any:
    """``json.loads``, but a document too deeply nested loses its deepest parts instead
    of raising ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(flatten(raw, FLATTEN_DEPTH))


def flatten(text: str, limit: int) -> str:
    """``text`` (JSON) with every object or array deeper than ``limit`` replaced by ``MARKER``."""
    out: list[str] = []
    depth = 0
    skip_from = -1  # depth at which a skipped subtree started
    in_string = escaped = False
    start = 0  # start of the run of characters to keep
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit and skip_from < 0:
                out.append(text[start:i])
                out.append(json.dumps(MARKER))
                skip_from = depth
        elif ch in "}]":
            if skip_from == depth:
                skip_from = -1
                start = i + 1
            depth -= 1
    if skip_from < 0:
        out.append(text[start:])
    return "".join(out)
