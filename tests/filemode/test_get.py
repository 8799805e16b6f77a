"""``get ACCOUNT -d DIR --output-dir OUT``: the record of the last pass names the files that
fed the account, and only those are read."""

from __future__ import annotations

import pathlib
import shutil

from tests.conftest import RunCli


def test_record_gives_the_same_answer(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    assert cli("reconcile", declarations, "--output-dir", out).returncode == 0
    for args in (("acct-123",), ("acct-456", "openai"), ("acct-free",)):
        for fmt in ("table", "json"):
            full = cli("get", *args, "-d", declarations, "-o", fmt)
            fast = cli("get", *args, "-d", declarations, "--output-dir", out, "-o", fmt)
            assert (fast.returncode, fast.stdout) == (0, full.stdout), fast.stderr


def test_only_the_recorded_files_are_read(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    assert cli("reconcile", declarations, "--output-dir", out).returncode == 0
    # Another file now declares acct-123 a second time: a whole pass sees the conflict,
    # reading the record's files only does not (the documented trade-off of --output-dir).
    clash = declarations / "accounts" / "acct-456.yaml"
    clash.write_text(
        clash.read_text() + "---\napiVersion: integrations.igny8.com/v1alpha1\nkind: Account\n"
        "metadata: {name: acct-123}\nspec: {plan: free, namespace: acct-123}\n"
    )
    full = cli("get", "acct-123", "-d", declarations)
    assert full.returncode == 1, full.stdout
    fast = cli("get", "acct-123", "-d", declarations, "--output-dir", out)
    assert fast.returncode == 0, fast.stderr
    assert "acct-123 (pro) · openai · enabled · Custom settings" in fast.stdout


def test_a_moved_account_falls_back_to_every_file(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    assert cli("reconcile", declarations, "--output-dir", out).returncode == 0
    accounts = declarations / "accounts"
    (accounts / "moved").mkdir()
    shutil.move(accounts / "acct-789.yaml", accounts / "moved" / "renamed.yaml")
    done = cli("get", "acct-789", "-d", declarations, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert "acct-789 (pro) · openai · enabled · Using platform defaults" in done.stdout
    gone = cli("get", "acct-nobody", "-d", declarations, "--output-dir", out)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_output_dir_needs_declarations(cli: RunCli, tmp_path: pathlib.Path) -> None:
    done = cli("get", "acct-123", "--output-dir", tmp_path)
    assert done.returncode == 2 and "--output-dir needs -d DIR" in done.stderr


def test_a_relative_output_dir_is_read_through_its_record(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """``get … --output-dir out`` raised "relative path can't be expressed as a file URI".
    The directory's name holds the characters a URI gives a meaning to."""
    out = "out dir?#%20"
    assert cli("reconcile", declarations, "--output-dir", out, cwd=tmp_path).returncode == 0
    # As above: a second acct-123 that only a whole pass sees proves the record was read.
    clash = declarations / "accounts" / "acct-456.yaml"
    clash.write_text(
        clash.read_text() + "---\napiVersion: integrations.igny8.com/v1alpha1\nkind: Account\n"
        "metadata: {name: acct-123}\nspec: {plan: free, namespace: acct-123}\n"
    )
    done = cli("get", "acct-123", "openai", "-d", declarations, "--output-dir", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("acct-123 (pro) · openai · enabled · Custom settings")


def test_either_spelling_of_an_integration_type(cli: RunCli, declarations: pathlib.Path) -> None:
    """The object is named image-generation, the type image_generation: both are accepted."""
    by_type = cli("get", "acct-123", "image_generation", "-d", declarations, "-o", "json")
    by_name = cli("get", "acct-123", "image-generation", "-d", declarations, "-o", "json")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_type.stdout and '"service": "runware"' in by_name.stdout
    table = cli("get", "acct-123", "image-generation", "-d", declarations)
    assert table.stdout.startswith("acct-123 (pro) · image_generation · enabled")
    unknown = cli("get", "acct-123", "image generation", "-d", declarations)
    assert unknown.returncode == 2
    assert "one of image_generation (image-generation), openai" in unknown.stderr
