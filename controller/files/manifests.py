"""The ConfigMap manifest of an account as YAML: ``OUT/<namespace>/integration-settings.yaml``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from controller.core import rendering

MANIFEST = f"{rendering.CONFIGMAP_NAME}.yaml"

_Dumper = yaml.CSafeDumper if yaml.__with_libyaml__ else yaml.SafeDumper


class _BlockStyleDumper(_Dumper):  # type: ignore[valid-type, misc]
    """Multi-line strings (the JSON documents) as literal blocks, readable in a manifest."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


# Printable ASCII lines; anything else goes through the YAML library.
_PLAIN_BLOCK = re.compile(r"[!-~][ -~]*(\n[ -~]*)*\n\Z")


_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _scalar(text: str) -> str:
    """Plain when YAML reads it back as the same string, else double-quoted."""
    if _PLAIN_SCALAR.fullmatch(text) and text.lower() not in _YAML11_WORDS:
        return text
    return json.dumps(text)


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    """The ConfigMap as YAML, the ``data`` values as literal blocks.

    The manifest has one fixed shape, so it is laid out directly: the library's
    pure-Python representer cost more than everything else in a cold pass of
    100,000 accounts. Scalars are JSON strings (valid YAML); the test suite
    checks that the result loads back to ``manifest``. Content the layout
    cannot hold verbatim falls back to the library.
    """
    meta, data = manifest["metadata"], manifest["data"]
    if not all(_PLAIN_BLOCK.match(value) for value in data.values()):
        return yaml.dump(manifest, Dumper=_BlockStyleDumper, sort_keys=False, width=1 << 16)
    q = _scalar
    lines = [
        f"apiVersion: {q(manifest['apiVersion'])}",
        f"kind: {q(manifest['kind'])}",
        "metadata:",
        f"  name: {q(meta['name'])}",
        f"  namespace: {q(meta['namespace'])}",
        "  labels:",
        *(f"    {q(k)}: {q(v)}" for k, v in meta["labels"].items()),
        "  annotations:",
        *(f"    {q(k)}: {q(v)}" for k, v in meta["annotations"].items()),
        "data:" if data else "data: {}",
    ]
    for key, value in data.items():
        lines.append(f"  {q(key)}: |")
        lines.extend(f"    {line}" if line else "" for line in value[:-1].split("\n"))
    return "\n".join(lines) + "\n"
