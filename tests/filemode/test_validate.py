"""``validate`` and ``get``: messages that name the file and the line of the offending value."""

from __future__ import annotations

import json
import pathlib
import shutil
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
        # Reported beside the schema error, not one CI round after it.
        f"{path}:9: error: IntegrationSettings acct-123/openai: spec.overrides.temperature: rejected: must be <= 2",
        f"{path}:17: error: Account acct-9: spec.namespace: must match the pattern ^[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?$",
        f"{path}:18: error: Account acct-9: spec.openai_api_key: unknown field: it looks like a platform key; "
        "keys are referenced from GlobalIntegrationSettings credentials (a Secret), never written in a declaration",
        f"{path}:21: error: ConfigMap x: kind: unknown kind 'ConfigMap' (expected one of GlobalIntegrationSettings, "
        "Account, IntegrationSettings)",
        f"{path}: note: no GlobalIntegrationSettings among the files checked: overrides were checked "
        "against schemas/ only; allowedValues, plans and which integrations are configured were not "
        "checked (pass the platform's with --global PATH)",
    ]
    assert "1 file checked, 5 errors" in done.stderr


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
        pytest.param(
            "a: 1\na: 2\n",
            2,
            "duplicate key: the same key is already set at line 1",
            id="duplicate-key",
        ),
        pytest.param("a:\n\t- b\n", 2, "invalid YAML", id="tab"),
        pytest.param("kind: Account\nspec: [unclosed\n", 3, "invalid YAML", id="unclosed"),
        pytest.param("base: &b {x: 1}\nother:\n  <<: *b\n", 3, "merge keys", id="merge-key"),
        pytest.param("yes: 1\n", 1, "keys must be strings", id="bool-key"),
        pytest.param("x: !!binary aGVsbG8=\n", 1, "unsupported YAML tag !!binary", id="binary"),
        pytest.param("x: !custom 1\n", 1, "unsupported YAML tag", id="custom-tag"),
        pytest.param("x: .nan\n", 1, "NaN", id="nan"),
        pytest.param("x: -.inf\n", 1, "NaN and Infinity", id="inf"),
        pytest.param("- 1\n- 2\n", 1, "must be a mapping", id="list-document"),
        # An empty string is a value, not an empty document: kubectl refuses it too.
        pytest.param('--- ""\n', 1, "must be a mapping", id="string-document"),
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


def test_empty_and_null_documents_are_skipped_as_kubectl_does(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """A leading, doubled or trailing ``---`` and a ``~`` / ``null`` document (generators emit
    them; ``kubectl apply -f`` skips them) declare nothing and are no error; a problem after
    them keeps its own line."""
    text = (EXAMPLES / "accounts" / "acct-123.yaml").read_text()
    text = text.replace("temperature: 0.8", "temperature: 9")
    path = tmp_path / "acct-123.yaml"
    path.write_text("---\n---\n~\n---\nnull\n--- !!null\n---\n" + text + "\n---\n# end\n---\n")
    done = cli("validate", path)
    assert done.returncode == 1, done.stdout
    line = (
        ("---\n---\n~\n---\nnull\n--- !!null\n---\n" + text)
        .splitlines()
        .index("    temperature: 9")
    )
    assert done.stdout.splitlines()[0] == (
        f"{path}:{line + 1}: error: IntegrationSettings acct-123/openai: "
        "spec.overrides.temperature: rejected: must be <= 2"
    )
    assert "1 file checked, 1 error" in done.stderr


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


EVERY_ERROR = textwrap.dedent(
    """\
    apiVersion: integrations.igny8.com/v1alpha1
    kind: IntegrationSettings
    metadata: {name: openai, namespace: acct-123}
    spec:
      bogus: 1
      overrides:
        model: 12
        temperature: 9
        api_key: sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789
    ---
    apiVersion: integrations.igny8.com/v1alpha1
    kind: Account
    metadata: {name: acct-9}
    spec: {plan: pro, namespace: kube-system, nope: 2}
    ---
    apiVersion: integrations.igny8.com/v1alpha1
    kind: GlobalIntegrationSettings
    metadata: {name: default}
    spec:
      extra: true
      integrations:
        openai:
          credentials: {apiKey: {secretName: platform-api-keys, key: openai}}
          defaults: {model: sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789, temperature: 0.7, max_tokens: 9}
    """
)


def test_every_error_of_a_file_in_one_run(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """An unknown field (a schema error) used to hide every other problem of its object:
    the override fields, the reserved namespace, a key pasted into the global's defaults."""
    path = tmp_path / "every.yaml"
    path.write_text(EVERY_ERROR)
    done = cli("validate", path, "-o", "json")
    assert done.returncode == 1
    found = [(f["line"], f["reason"], f["message"]) for f in json.loads(done.stdout)["findings"]]
    assert [(line, reason) for line, reason, _ in found] == [
        (5, "SchemaViolation"),
        (7, "ValueRejected"),
        (8, "ValueRejected"),
        (9, "CredentialFieldStripped"),
        (14, "SchemaViolation"),
        (14, "ReservedNamespace"),
        (20, "SchemaViolation"),
        (24, "KeyShapedValue"),
    ]
    assert "sk-proj" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "spec",
    [
        "integrations: [1, 2]",
        "integrations: {openai: 3}",
        "integrations: {openai: {defaults: 1, allowedValues: {model: 2}, credentials: [x]}}",
        "integrations: {openai: {credentials: {apiKey: 7}, allowedValues: 3}}",
        "plans: 1",
    ],
)
def test_checks_beyond_the_schema_read_a_malformed_global_safely(
    cli: RunCli, tmp_path: pathlib.Path, spec: str
) -> None:
    path = tmp_path / "global.yaml"
    path.write_text(
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: GlobalIntegrationSettings\n"
        f"metadata: {{name: default}}\nspec: {{{spec}}}\n"
    )
    done = cli("validate", path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith(f"{path}:"), done.stdout


GITOPS = EXAMPLES.parent / "deploy" / "gitops" / "declarations"
TENANT = textwrap.dedent(
    """\
    apiVersion: integrations.igny8.com/v1alpha1
    kind: IntegrationSettings
    metadata: {{name: openai, namespace: acct-gitops}}
    spec:
      overrides:
        model: gpt-5
        temperature: {temperature}
    """
)
NOT_CHECKED_GLOBAL = (
    "note: no GlobalIntegrationSettings among the files checked: overrides were checked against "
    "schemas/ only; allowedValues, plans and which integrations are configured were not checked "
    "(pass the platform's with --global PATH)"
)
NOT_CHECKED_ACCOUNTS = (
    "note: no Account among the files checked: which account owns each namespace and whether "
    "its plan may override were not checked (pass the platform's declarations with --global DIR)"
)


def test_a_tenant_repository_alone_is_checked_as_far_as_it_can_be(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """Tenant files alone failed on "no valid GlobalIntegrationSettings" at location "."
    (or on "no Account"): a tenant's CI could never pass."""
    tenant = tmp_path / "tenant"
    tenant.mkdir()
    (tenant / "openai.yaml").write_text(TENANT.format(temperature=0.5))
    alone = cli("validate", tenant)
    assert alone.returncode == 0, alone.stdout
    assert alone.stdout.splitlines() == [
        f"{tenant}: {NOT_CHECKED_GLOBAL}",
        f"{tenant}: {NOT_CHECKED_ACCOUNTS}",
    ]
    # The schema checks still run without the global: temperature 7 is out of range.
    (tenant / "openai.yaml").write_text(TENANT.format(temperature=7))
    bad = cli("validate", tenant)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == (
        f"{tenant / 'openai.yaml'}:7: error: IntegrationSettings acct-gitops/openai: "
        "spec.overrides.temperature: rejected: must be <= 2"
    )
    assert "gpt-5" not in bad.stdout and not bad.stdout.startswith(".:")


def test_a_tenant_repository_with_the_platforms_global(cli: RunCli, tmp_path: pathlib.Path) -> None:
    tenant = tmp_path / "tenant"
    tenant.mkdir()
    (tenant / "openai.yaml").write_text(TENANT.format(temperature=0.5))
    rejected = (
        f"{tenant / 'openai.yaml'}:6: error: IntegrationSettings acct-gitops/openai: "
        "spec.overrides.model: rejected: must be one of the allowed values: gpt-4o-mini, gpt-4o, gpt-4.1"
    )
    with_global = cli("validate", tenant, "--global", GITOPS / "platform" / "global.yaml")
    assert with_global.returncode == 1
    assert with_global.stdout.splitlines() == [rejected, f"{tenant}: {NOT_CHECKED_ACCOUNTS}"]
    with_platform = cli("validate", tenant, "--global", GITOPS / "platform")
    assert with_platform.returncode == 1
    assert with_platform.stdout.splitlines() == [rejected]
    assert "3 files checked, 1 error" in with_platform.stderr
    # A free plan, and the plan's verdict is reported too.
    platform = tmp_path / "platform"
    platform.mkdir()
    (platform / "global.yaml").write_text((GITOPS / "platform" / "global.yaml").read_text())
    (platform / "account.yaml").write_text(
        (GITOPS / "platform" / "acct-gitops.yaml").read_text().replace("plan: pro", "plan: free")
    )
    free = cli("validate", tenant, "--global", platform)
    assert f"{platform / 'account.yaml'}:" in free.stdout and "plan 'free' may not" in free.stdout


def test_the_global_option_must_hold_a_global(cli: RunCli, tmp_path: pathlib.Path) -> None:
    missing = cli("validate", GITOPS / "tenants", "--global", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "--global" in missing.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    none = cli("validate", GITOPS / "tenants", "--global", empty)
    assert none.returncode == 1
    assert f"{empty}: error: no GlobalIntegrationSettings in --global" in none.stdout
    # A global that is present but unusable is still an error, never a note.
    (tmp_path / "g.yaml").write_text(
        (GITOPS / "platform" / "global.yaml").read_text().replace("name: default", "name: other")
    )
    other = cli("validate", GITOPS / "platform" / "acct-gitops.yaml", tmp_path / "g.yaml")
    assert (
        other.returncode == 1
        and "no valid GlobalIntegrationSettings named 'default'" in other.stdout
    )
    assert not other.stdout.startswith(".:")


def test_a_plan_the_global_does_not_declare_is_named(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Issue 20, break 5: ``free`` renamed to ``starter`` in the global before the Accounts.

    Reported like a free plan (a note: a policy outcome, exit 0), on every Account
    on the missing plan, with or without overrides, naming the Account and the plan;
    those Accounts get the defaults only.
    """
    glob = declarations / "global.yaml"
    glob.write_text(glob.read_text().replace("    free: {", "    starter: {", 1))
    acct = declarations / "accounts" / "acct-789.yaml"
    acct.write_text(acct.read_text().replace("plan: pro", "plan: free"))
    done = cli("validate", declarations)
    assert done.returncode == 0, done.stdout
    notes = [line for line in done.stdout.splitlines() if "not declared" in line]
    assert sorted(n.split(": note: ")[1].split(":")[0] for n in notes) == [
        "Account acct-789",
        "Account acct-free",
    ]
    for note in notes:
        assert (
            "plan 'free' is not declared in GlobalIntegrationSettings spec.plans "
            "(declared: enterprise, pro, starter)" in note
        )
        assert "no overrides and no platform keys" in note
        assert note.split(":")[1].isdigit()  # the line of spec.plan
    out = tmp_path / "out"
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "acct-789: plan 'free' is not declared" in done.stdout + done.stderr
    written = json.loads((out / "acct-free" / "openai.json").read_text())
    assert written["using_global"] is True
    assert written["choices"] == {"fields": {}, "overrides_allowed": False}


@pytest.mark.parametrize(
    "spellings",
    [
        pytest.param(["examples", "{abs}/examples/global.yaml"], id="tree-and-absolute-file"),
        pytest.param(["examples", "examples/accounts/"], id="tree-and-subdirectory"),
        pytest.param(["checkout", "examples/./accounts/../global.yaml"], id="symlinked-tree"),
        pytest.param(["examples", "--global", "{abs}/checkout"], id="global-is-the-tree"),
    ],
)
def test_a_file_reached_twice_is_checked_once(
    cli: RunCli, tmp_path: pathlib.Path, spellings: list[str]
) -> None:
    """A CI script validating the tree plus the changed files names some files twice; each
    is read once, so nothing is "declared more than once" and the count is of files."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "checkout").symlink_to("examples")
    args = [s.format(abs=tmp_path) for s in spellings]
    done = cli("validate", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert "declared more than once" not in done.stdout
    assert "6 files checked, 0 errors" in done.stderr


def test_a_symlink_inside_the_tree_still_counts_as_in_file_mode(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """Only the same file reached through two arguments is merged: inside one directory a
    link to another file declares its objects again, as ``reconcile`` reads it."""
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root)
    (root / "global-again.yaml").symlink_to("global.yaml")
    done = cli("validate", root)
    assert done.returncode == 1
    assert done.stdout.count("declared more than once") == 2


HOSTILE_NAMES = {
    "newline": ("x\nforged.yaml:1: error: planted.yaml", "x\\nforged.yaml:1: error: planted.yaml"),
    "carriage-return": ("x\rforged.yaml", "x\\rforged.yaml"),
    "terminal-escape": ("x\x1b[2Jy.yaml", "x\\x1b[2Jy.yaml"),
    "next-line": ("x\x85y.yaml", "x\\x85y.yaml"),
    "line-separator": ("x\u2028y.yaml", "x\\u2028y.yaml"),
    "bidi-override": ("x\u202ey.yaml", "x\\u202ey.yaml"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_a_hostile_name_is_printed_escaped_on_one_line(
    cli: RunCli, tmp_path: pathlib.Path, case: str
) -> None:
    """A file name (and an object name in it) holding a line break, a terminal escape or a
    bidi override: ``validate`` and ``reconcile`` print one line per problem or log record,
    the name escaped as Python writes it, every line printable (``str.splitlines`` breaks at
    NEL and U+2028 too, as editors do)."""
    name, escaped = HOSTILE_NAMES[case]
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root)
    (root / "accounts" / name).write_text(
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
        'metadata: {name: "openai\\nx.yaml:1: error", namespace: acct-123}\nspec: {}\n'
    )
    checked = cli("validate", root)
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert len(lines) == 3 and all(line.isprintable() for line in lines), lines
    assert lines[2].startswith(f"{root}/accounts/{escaped}:3: error: ")
    assert "IntegrationSettings acct-123/openai\\nx.yaml:1: error: metadata.name" in lines[2]
    done = cli("reconcile", root, "--output-dir", tmp_path / "out")
    assert done.returncode == 1
    logged = done.stderr.splitlines()
    assert all(line.isprintable() for line in logged), logged
    assert sum(f"{root}/accounts/{escaped}:3: error: " in line for line in logged) == 1


def test_a_path_in_an_error_line_is_escaped(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """The error lines of ``main`` (a usage error, a SettingsError) name paths the user gave."""
    missing = cli("validate", "--global", tmp_path / "no\nsuch.yaml", EXAMPLES)
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1].endswith("no\\nsuch.yaml: no such file")
    blocker = tmp_path / "a\nfile"
    blocker.write_text("")
    crds = cli("crds", "--output-dir", blocker)
    assert crds.returncode == 1 and crds.stderr.count("\n") == 1, crds.stderr
    assert "a\\nfile is not a directory" in crds.stderr
