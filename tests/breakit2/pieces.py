"""Shared pieces of the second break-it pass."""

from __future__ import annotations

import pathlib

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678"


def global_yaml(endpoint: str) -> str:
    """A valid global whose one credential points at ``endpoint``."""
    return f"""apiVersion: integrations.igny8.com/v1alpha1
kind: GlobalIntegrationSettings
metadata: {{name: default}}
spec:
  plans: {{pro: {{allowOverrides: true}}}}
  integrations:
    openai:
      credentials: {{apiKey: {{secretName: platform-api-keys, key: openai, endpoint: "{endpoint}"}}}}
      defaults: {{model: gpt-4o-mini, temperature: 0.7, max_tokens: 8192}}
"""


def write_global(tmp: pathlib.Path, endpoint: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The global file and a keys directory holding KEY as ``openai``."""
    path = tmp / "global.yaml"
    path.write_text(global_yaml(endpoint))
    keys = tmp / "keys"
    keys.mkdir()
    (keys / "openai").write_text(KEY)
    return path, keys
