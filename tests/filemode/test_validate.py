"""``validate`` and ``get``: messages that name the file and the line of the offending value."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest

from tests.conftest import EXAMPLES, RunCli

BAD = textwrap.dedent(
    """\
    apiVersion: integrations.igny8.com/v1alpha1
    kind: IntegrationSettings
    metadata:
      name: openai
      namespace: acct-123
    spec:
      isActive: yes-please
      overrides:
        temperature: 7
    ---
    apiVersion: integrations.igny8.com/v1alpha1
    kind: Account
    metadata:
      name: acct-9
    spec:
      plan: pro
      namespace: Not_A_Namespace
      openai_api_key: whatever
    ---
    apiVersion: integrations.igny8.com/v1alpha1
    kind: ConfigMap
    metadata: {name: x}
    """
)


def test_every_problem_with_its_line(cli: RunCli, tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    done = cli("validate", tmp_path / "bad.yaml")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    path = str(tmp_path / "bad.yaml")
    assert lines == [
        f"{path}:7: error: IntegrationSettings acct-123/openai: spec.isActive: must be of type boolean",
        f"{path}:17: error: Account acct-9: spec.namespace: must match the pattern ^[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?$",
        f"{path}:18: error: Account acct-9: spec.openai_api_key: unknown field: it looks like a platform key; "
        "keys are referenced from GlobalIntegrationSettings credentials (a Secret), never written in a declaration",
        f"{path}:21: error: ConfigMap x: kind: unknown kind 'ConfigMap' (expected one of GlobalIntegrationSettings, "
        "Account, IntegrationSettings)",
    ]
    assert "1 file checked, 4 errors" in done.stderr


def test_field_findings_point_at_the_override_line(cli: RunCli, tmp_path: pathlib.Path) -> None:
    decl = tmp_path / "d"
    decl.mkdir()
    (decl / "global.yaml").write_text((EXAMPLES / "global.yaml").read_text())
    (decl / "a.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: integrations.igny8.com/v1alpha1
            kind: Account
            metadata: {name: a}
            spec: {plan: pro, namespace: a}
            ---
            apiVersion: integrations.igny8.com/v1alpha1
            kind: IntegrationSettings
            metadata: {name: openai, namespace: a}
            spec:
              overrides:
                model: gpt-9
                top_p: 1
                temperature: 0.1
            """
        )
    )
    done = cli("validate", decl, "-o", "json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["files"] == 2 and report["errors"] == 2
    assert [(f["line"], f["reason"], f["object"]) for f in report["findings"]] == [
        (11, "ValueRejected", "IntegrationSettings a/openai"),
        (12, "FieldStripped", "IntegrationSettings a/openai"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("a: 1\na: 2\n", 2, "duplicate key 'a'", id="duplicate-key"),
        pytest.param("a:\n\t- b\n", 2, "invalid YAML", id="tab"),
        pytest.param("kind: Account\nspec: [unclosed\n", 3, "invalid YAML", id="unclosed"),
        pytest.param("base: &b {x: 1}\nother:\n  <<: *b\n", 3, "merge keys", id="merge-key"),
        pytest.param("yes: 1\n", 1, "keys must be strings", id="bool-key"),
        pytest.param("x: !!binary aGVsbG8=\n", 1, "unsupported YAML tag", id="binary"),
        pytest.param("x: !custom 1\n", 1, "unsupported YAML tag", id="custom-tag"),
        pytest.param("x: .nan\n", 1, "NaN", id="nan"),
        pytest.param("x: -.inf\n", 1, "NaN and Infinity", id="inf"),
        pytest.param("- 1\n- 2\n", 1, "must be a mapping", id="list-document"),
        pytest.param("x: " + "[" * 100 + "]" * 100 + "\n", 1, "deeper than", id="deep"),
        pytest.param(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
            1,
            "alias expansions",
            id="billion-laughs",
        ),
        pytest.param("\x00\x01", 1, "invalid YAML", id="control-chars"),
    ],
)
def test_yaml_problems(
    cli: RunCli, tmp_path: pathlib.Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    done = cli("validate", path, timeout=30)
    assert done.returncode == 1
    assert done.stdout.startswith(f"{path}:{line}: error: "), done.stdout
    assert message in done.stdout
    assert "Traceback" not in done.stderr


def test_not_utf8(cli: RunCli, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_bytes(b"kind: Account\nname: \xff\xfe\n")
    done = cli("validate", path)
    assert done.returncode == 1 and f"{path}:2: error: file is not valid UTF-8" in done.stdout


def test_hidden_and_editor_files_are_ignored(cli: RunCli, tmp_path: pathlib.Path) -> None:
    for name in (".hidden.yaml", "#autosave.yaml#", "file.yaml~", ".file.yaml.swp", "notes.txt"):
        (tmp_path / name).write_text("garbage: [")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("garbage: [")
    done = cli("validate", tmp_path)
    assert done.returncode == 0 and "0 files checked, 0 errors" in done.stderr


def test_examples_are_valid(cli: RunCli) -> None:
    done = cli("validate", EXAMPLES)
    assert done.returncode == 0, done.stdout
    assert "6 files checked, 0 errors" in done.stderr
    assert done.stdout.count(": note: ") == 2


def test_get_shows_the_badge_and_provenance(cli: RunCli) -> None:
    done = cli("get", "acct-123", "openai", "--declarations", EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "acct-123 (pro) · openai · enabled · Custom settings",
        "  FIELD        VALUE   SOURCE",
        "  model        gpt-4o  account override",
        "  temperature  0.8     account override",
        "  max_tokens   8192    platform default",
    ]
    default = cli("get", "acct-789", "-d", EXAMPLES)
    assert default.stdout.count("Using platform defaults") == 2


def test_get_json_and_yaml_match_the_mounted_json(cli: RunCli, tmp_path: pathlib.Path) -> None:
    cli("reconcile", EXAMPLES, "--output-dir", tmp_path)
    as_json = json.loads(cli("get", "acct-456", "openai", "-d", EXAMPLES, "-o", "json").stdout)
    assert as_json == json.loads((tmp_path / "acct-456" / "openai.json").read_text())
    both = cli("get", "acct-456", "-d", EXAMPLES, "-o", "yaml")
    assert (
        both.returncode == 0
        and "image_generation:" in both.stdout
        and "using_global: false" in both.stdout
    )


def test_get_unknown_account(cli: RunCli) -> None:
    done = cli("get", "acct-nope", "-d", EXAMPLES)
    assert done.returncode == 1 and "account 'acct-nope' not found" in done.stderr
