"""The chart README's values table from values.yaml's comments, helm-docs' convention.

A comment ``# -- text`` (continued by the ``#`` lines right after it) documents the key
on the next line; ``# @default -- text`` replaces the shown default. Keys without a
``# --`` comment are not listed (their parent documents them). The table is
``| Key | Type | Default | Description |`` as helm-docs writes it; README.md.tpl holds
the prose around it and the marker ``@@VALUES@@``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MARKER = "@@VALUES@@"
_KEY = re.compile(r"^( *)([A-Za-z][\w.-]*|\"[^\"]+\"):")


def _lookup(values: Any, path: list[str]) -> Any:
    for key in path:
        values = values[key]
    return values


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"  # null: helm-docs shows nil values as strings


def rows(text: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every documented key, in file order."""
    values = yaml.safe_load(text)
    found = []
    stack: list[tuple[int, str]] = []
    doc: list[str] | None = None
    shown_default: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc, shown_default = [stripped.removeprefix("# --").strip()], None
            continue
        if stripped.startswith("# @default --"):
            shown_default = stripped.removeprefix("# @default --").strip()
            continue
        if stripped.startswith("#") and doc is not None:
            doc.append(stripped.removeprefix("#").strip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent, key = len(match[1]), match[2].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if doc is not None:
            path = [k for _, k in stack]
            value = _lookup(values, path)
            default = shown_default or f"`{json.dumps(value)}`"
            found.append((".".join(path), _type(value), default, " ".join(doc)))
        doc, shown_default = None, None
    return found


def table(text: str) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, kind, default, description in rows(text):
        cells = [c.replace("|", "\\|") for c in (key, kind, default, description)]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def readme(values_text: str, template: str) -> str:
    if MARKER not in template:
        raise ValueError(f"README.md.tpl has no {MARKER} marker")
    return template.replace(MARKER, table(values_text).rstrip("\n"))
