"""``reconcile`` end to end: the installed CLI in a subprocess, on temporary directories."""

from __future__ import annotations

import json
import pathlib
import stat

from tests.conftest import RunCli
from tests.filemode.outputs import contents, effective, manifest, snapshot, unwritable

ACCOUNTS = ["acct-123", "acct-456", "acct-789", "acct-free", "acct-paused"]


def test_examples_render_the_seed_table(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ACCOUNTS

    # Scenario 2 (customise) and the seed's rows 100-102.
    openai_123 = effective(out, "acct-123", "openai")
    choices = openai_123.pop("choices")
    assert openai_123 == {
        "id": "openai",
        "enabled": True,
        "model": "gpt-4o",
        "temperature": 0.8,
        "max_tokens": 8192,
        "using_global": False,
        "overridden": ["model", "temperature"],
    }
    # What the tenant may choose: the global's allowedValues, the schema's range.
    assert choices["overrides_allowed"] is True
    assert list(choices["fields"]) == ["max_tokens", "model", "temperature"]
    assert choices["fields"]["model"]["enum"] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
    temperature = choices["fields"]["temperature"]
    assert (temperature["type"], temperature["minimum"], temperature["maximum"]) == ("number", 0, 2)
    assert effective(out, "acct-free", "openai")["choices"] == {
        "overrides_allowed": False,
        "fields": {},
    }
    image = effective(out, "acct-123", "image_generation")
    assert (image["service"], image["model"], image["using_global"]) == (
        "runware",
        "runware:100@1",
        False,
    )
    openai_456 = effective(out, "acct-456", "openai")
    assert (openai_456["model"], openai_456["max_tokens"], openai_456["temperature"]) == (
        "gpt-4.1",
        4000,
        0.7,
    )
    assert effective(out, "acct-456", "image_generation")["using_global"] is True
    # Scenario 1 (new user), a free plan and an inactive override all use the defaults.
    for namespace in ("acct-789", "acct-free", "acct-paused"):
        for type_ in ("openai", "image_generation"):
            assert effective(out, namespace, type_)["using_global"] is True, (namespace, type_)
    # Policy outcomes are notes: named with file and line, exit code untouched.
    assert "acct-free.yaml:8: note: Account acct-free: plan 'free' may not override" in done.stderr
    assert "acct-paused.yaml:17: note:" in done.stderr and "isActive is false" in done.stderr


def test_manifest_is_a_configmap_with_the_json_files(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    cm = manifest(out, "acct-123")
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap"
    assert (
        cm["metadata"]["name"] == "integration-settings"
        and cm["metadata"]["namespace"] == "acct-123"
    )
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "settings-controller",
        "integrations.igny8.com/account": "acct-123",
    }
    assert cm["metadata"]["annotations"]["integrations.igny8.com/content-hash"].startswith(
        "sha256:"
    )
    for type_ in ("openai", "image_generation"):
        assert cm["data"][f"{type_}.json"] == (out / "acct-123" / f"{type_}.json").read_text()


def test_outputs_are_deterministic_and_unchanged_ones_not_rewritten(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out, other = tmp_path / "out", tmp_path / "other"
    cli("reconcile", declarations, "--output-dir", out)
    before = snapshot(out)
    again = cli("reconcile", declarations, "--output-dir", out)
    assert again.returncode == 0 and "0 written, 5 unchanged" in again.stderr
    assert snapshot(out) == before  # same inode, same mtime: nothing rewritten
    cli("reconcile", declarations, "--output-dir", other)
    assert contents(other) == contents(out)  # byte-identical from scratch


def test_outputs_are_not_world_writable(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    for path in out.rglob("*"):
        assert not path.stat().st_mode & stat.S_IWOTH, path
        assert not path.stat().st_mode & stat.S_IWGRP, path


def test_reset_by_deleting_the_override(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # Scenario 3: deleting the IntegrationSettings object is "reset to defaults".
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    path = declarations / "accounts" / "acct-456.yaml"
    path.write_text(path.read_text().split("---")[0])
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 0
    assert effective(out, "acct-456", "openai") == effective(out, "acct-789", "openai")
    assert "1 written, 4 unchanged" in done.stderr


def test_global_change_reaches_only_non_overriders(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # Scenario 4: the admin changes the default model.
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    global_ = declarations / "global.yaml"
    global_.write_text(global_.read_text().replace("model: gpt-4o-mini", "model: gpt-4.1"))
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert effective(out, "acct-789", "openai")["model"] == "gpt-4.1"
    assert effective(out, "acct-free", "openai")["model"] == "gpt-4.1"
    assert effective(out, "acct-123", "openai")["model"] == "gpt-4o"
    assert effective(out, "acct-456", "openai")["model"] == "gpt-4.1"  # its own choice, unchanged
    # acct-456 chose gpt-4.1 itself, so its output did not change and was not rewritten.
    assert "3 written, 2 unchanged" in done.stderr


def test_key_in_override_is_stripped_and_reported(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    path = declarations / "accounts" / "acct-123.yaml"
    path.write_text(
        path.read_text().replace(
            "    temperature: 0.8\n", "    temperature: 0.8\n    apiKey: sk-FAKE-STRIPME-1\n"
        )
    )
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 1
    line = path.read_text().splitlines().index("    apiKey: sk-FAKE-STRIPME-1") + 1
    assert (
        f"acct-123.yaml:{line}: error: IntegrationSettings acct-123/openai: spec.overrides.apiKey: stripped"
        in done.stderr
    )
    assert effective(out, "acct-123", "openai")["overridden"] == ["model", "temperature"]
    assert "sk-FAKE-STRIPME" not in done.stderr + done.stdout + json.dumps(contents(out))


def test_invalid_yaml_keeps_last_good_output(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    good_123 = {k: v for k, v in snapshot(out).items() if k.startswith("acct-123/")}
    broken = declarations / "accounts" / "acct-123.yaml"
    broken.write_text(broken.read_text().replace("    model: gpt-4o\n", "    model: [gpt-4o\n"))
    global_ = declarations / "global.yaml"
    global_.write_text(global_.read_text().replace("max_tokens: 8192", "max_tokens: 9000"))
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 1
    assert "acct-123.yaml:" in done.stderr and "invalid YAML" in done.stderr
    assert "kept last good output of acct-123" in done.stderr
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith("acct-123/")} == good_123
    assert effective(out, "acct-789", "openai")["max_tokens"] == 9000  # the valid accounts moved on
    # Fixed again: the account catches up.
    broken.write_text(broken.read_text().replace("    model: [gpt-4o\n", "    model: gpt-4o\n"))
    assert cli("reconcile", declarations, "--output-dir", out).returncode == 0
    assert effective(out, "acct-123", "openai")["max_tokens"] == 9000


def test_schema_error_keeps_last_good_output(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    path = declarations / "accounts" / "acct-456.yaml"
    path.write_text(path.read_text().replace("  plan: pro", "  plan: [pro]"))
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 1
    assert (
        "acct-456.yaml:8: error: Account acct-456: spec.plan: must be of type string" in done.stderr
    )
    assert "1 error," in done.stderr  # and no cascade about its overrides' namespace
    assert effective(out, "acct-456", "openai")["model"] == "gpt-4.1"


def test_broken_global_keeps_every_output(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    before = snapshot(out)
    (declarations / "global.yaml").write_text("spec: {\n")
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 1 and "global.yaml:" in done.stderr
    assert snapshot(out) == before


def test_removed_account_loses_its_outputs(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    (declarations / "accounts" / "acct-paused.yaml").unlink()
    done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 0 and "1 removed" in done.stderr
    assert not (out / "acct-paused").exists()


def test_a_second_global_is_an_error(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    (declarations / "copy.yaml").write_text((declarations / "global.yaml").read_text())
    done = cli("reconcile", declarations, "--output-dir", tmp_path / "out")
    assert done.returncode == 1
    assert (
        "copy.yaml:7: error: GlobalIntegrationSettings default: GlobalIntegrationSettings is a singleton"
        in done.stderr
    )
    assert "global.yaml:7: error:" in done.stderr


def test_usage_errors_exit_2(cli: RunCli, tmp_path: pathlib.Path) -> None:
    for args in (
        [],
        ["reconcile"],
        ["reconcile", tmp_path / "missing", "--output-dir", tmp_path],
        ["frobnicate"],
        ["get"],  # without -d, `get ACCOUNT` reads a cluster (kubectl's default kubeconfig)
    ):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "usage:" in done.stderr


def test_unwritable_output_is_reported_and_old_files_kept(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output-dir", out)
    before = {k: v for k, v in snapshot(out).items() if k.startswith("acct-789/")}
    global_ = declarations / "global.yaml"
    global_.write_text(global_.read_text().replace("max_tokens: 8192", "max_tokens: 9000"))
    with unwritable(out / "acct-789"):
        done = cli("reconcile", declarations, "--output-dir", out)
    assert done.returncode == 1
    assert (
        f"{out / 'acct-789'}: error: cannot write outputs: Operation not permitted" in done.stderr
        or (f"{out / 'acct-789'}: error: cannot write outputs: Permission denied" in done.stderr)
    )
    assert {k: v for k, v in snapshot(out).items() if k.startswith("acct-789/")} == before
    assert effective(out, "acct-123", "openai")["max_tokens"] == 9000
    # Writable again: the next pass catches up.
    assert cli("reconcile", declarations, "--output-dir", out).returncode == 0
    assert effective(out, "acct-789", "openai")["max_tokens"] == 9000


def test_readme_shows_the_current_openai_json(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The README's `cat out/acct-123/openai.json` is what reconcile writes, choices included."""
    out = tmp_path / "out"
    cli("reconcile", declarations, "--output", out)
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    shown = readme.split("$ cat out/acct-123/openai.json\n", 1)[1].split("\n", 1)[0]
    assert shown + "\n" == (out / "acct-123" / "openai.json").read_text()


def test_an_output_directory_inside_the_declarations_is_never_read_back(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Breakit2: with OUT inside DIR every pass after the first read its own ConfigMap
    manifests back (``unknown kind 'ConfigMap'``, exit 1 on unchanged declarations). OUT,
    and any directory holding an output record, is left out of what is read; OUT equal to
    DIR is refused (its namespaces would sit among the declarations)."""
    out = declarations / "nested" / "out"
    for _ in range(3):
        done = cli("reconcile", declarations, "--output-dir", out)
        assert done.returncode == 0, done.stderr
        assert "ConfigMap" not in done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ACCOUNTS
    # validate and render know no OUT: the record marks it as outputs.
    done = cli("validate", declarations)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "out/acct-123" not in done.stdout + done.stderr
    render = cli("render", declarations)
    assert render.returncode == 0, render.stderr
    assert render.stdout.count("kind: ConfigMap") == len(ACCOUNTS)
    # Whatever lies in OUT is an output, never a declaration.
    (out / "acct-123" / "stray.yaml").write_text("kind: Account\n")
    assert cli("validate", declarations).returncode == 0
    same = cli("reconcile", declarations, "--output-dir", declarations)
    assert same.returncode == 2, same.stderr
    assert "--output-dir is DIR itself" in same.stderr
    assert not (declarations / "acct-123").exists()
