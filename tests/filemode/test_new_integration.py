"""A third integration type is one schema file: no Python changes."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

from tests.conftest import CLI, EXAMPLES, REPO

SPEECH = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://integrations.igny8.com/schemas/integrations/speech.json",
    "title": "speech",
    "description": "Text to speech.",
    "type": "object",
    "additionalProperties": False,
    "required": ["voice", "speed"],
    "properties": {
        "voice": {"type": "string", "enum": ["alloy", "echo"], "description": "Voice."},
        "speed": {"type": "number", "minimum": 0.25, "maximum": 4, "description": "Speed."},
    },
    "x-credentials": {"apiKey": "The platform's speech key."},
}


def test_a_schema_file_adds_an_integration(tmp_path: pathlib.Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    (schemas / "integrations" / "speech.json").write_text(json.dumps(SPEECH))
    decl = tmp_path / "decl"
    shutil.copytree(EXAMPLES, decl)
    global_ = decl / "global.yaml"
    global_.write_text(
        global_.read_text()
        + "    speech:\n"
        + "      credentials: {apiKey: {secretName: platform-api-keys, key: speech}}\n"
        + "      defaults: {voice: alloy, speed: 1}\n"
    )
    (decl / "accounts" / "acct-123-speech.yaml").write_text(
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
        "metadata: {name: speech, namespace: acct-123}\n"
        "spec: {overrides: {speed: 1.5, voice: whisper}}\n"
    )
    env = {**os.environ, "SETTINGS_CONTROLLER_SCHEMAS": str(schemas)}
    done = subprocess.run(
        [str(CLI), "reconcile", str(decl), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1  # voice: whisper is not one of the schema's voices
    assert 'spec.overrides.voice: rejected: must be one of "alloy", "echo"' in done.stderr
    speech = json.loads((tmp_path / "out" / "acct-123" / "speech.json").read_text())
    # The new type's choices come from its schema, with no code of its own.
    assert list(speech.pop("choices")["fields"]) == ["speed", "voice"]
    assert speech == {
        "id": "speech",
        "enabled": True,
        "voice": "alloy",
        "speed": 1.5,
        "using_global": False,
        "overridden": ["speed"],
    }
    assert (
        json.loads((tmp_path / "out" / "acct-789" / "speech.json").read_text())["using_global"]
        is True
    )
