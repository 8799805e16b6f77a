"""Strings that are and are not shaped like provider keys: one list for the core and admission.

tests/core/test_credentials.py runs them through ``credentials.looks_like_key_value``;
tests/operator/test_admission.py applies them with kubectl, so the CEL the
admission policies are generated from (``controller.generators.celrules``) must
agree with the core on every one.
"""

from __future__ import annotations

import pytest

KEY_SHAPED = [
    pytest.param("sk-proj-AbCdEf0123456789xyz", id="openai-project"),
    pytest.param("org/sk-abcdef0123456789", id="not-at-the-start"),  # issue 10 item 9
    pytest.param(" sk-live-abc123", id="leading-space"),  # issue 10 item 8
    pytest.param("AIzaSyA1b2C3d4E5f6G7h8I9j0-KLmnopqrs_tu", id="google-with-hyphen"),  # item 9
    pytest.param("rk_live_abc123def", id="restricted"),
    pytest.param("ghp_abcdefABCDEF0123456789abcdef", id="github"),
    pytest.param("AKIAABCDEFGHIJKLMNOP", id="aws-id"),
    pytest.param("Abcdefghijklmnopqrstuvwxyz0123456789", id="long-mixed-run"),
    pytest.param("models/AbCdEfGhIjKlMnOpQrStUvWxYz012345", id="run-after-a-slash"),
]

NOT_KEY_SHAPED = [
    pytest.param("gpt-4o-mini", id="model"),
    pytest.param("dall-e-3", id="image-model"),
    pytest.param("runware:97@1", id="runware-model"),
    pytest.param("text-embedding-3-large", id="long-hyphenated"),
    pytest.param("meta-llama/Meta-Llama-3-70B-Instruct-Lite", id="long-mixed-hyphenated"),
    pytest.param("ft:gpt-4o-mini-2024-07-18:my-org::9abcDEF1", id="fine-tuned"),
    pytest.param("desk-1", id="sk-inside-a-word"),
    pytest.param("abcdefghijklmnopqrstuvwxyz0123456789abc", id="long-lowercase"),
    pytest.param("1024x1024", id="size"),
]
