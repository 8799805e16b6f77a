"""A pass over unchanged declarations answers from the last complete pass's snapshot.

Each test runs a complete pass, then a new ``Reconciler`` and ``OutputDir``
(what a new ``reconcile`` process builds) and checks whether it may replay:
it must whenever nothing moved, and must not once anything a pass depends on
did. Where it may not, the full pass that follows is checked too.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3

import pytest

from controller import schemafiles, version
from controller.core import catalog as catalog_
from controller.files import outputs, reconciling
from tests.conftest import RunCli
from tests.filemode.outputs import snapshot


def _reconciler(
    cat: catalog_.Catalog, declarations: pathlib.Path, out: pathlib.Path
) -> reconciling.Reconciler:
    return reconciling.Reconciler(cat, declarations, outputs.OutputDir(out))


def _lines(report: reconciling.PassReport) -> list[str]:
    return [str(item) for item in report.findings]


@pytest.fixture
def done(
    catalog: catalog_.Catalog, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> reconciling.PassReport:
    """A complete pass over examples/, old enough that no stamp is too recent to trust."""
    past = 1_600_000_000_000_000_000
    for path in declarations.rglob("*.yaml"):
        os.utime(path, ns=(past, past))
    return _reconciler(catalog, declarations, tmp_path / "out").run()


def test_unchanged_tree_is_replayed_without_reading_or_writing(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    out = tmp_path / "out"
    before = snapshot(out)
    replayed = _reconciler(catalog, declarations, out).replay()
    assert replayed is not None and replayed.replayed
    full = _reconciler(catalog, declarations, out).run()
    # The same report a pass that reads everything gives, and no output touched.
    assert _lines(replayed) == _lines(full) == _lines(done) != []
    assert (replayed.accounts, replayed.unchanged, replayed.kept) == (
        full.accounts,
        full.unchanged,
        full.kept,
    )
    assert replayed.written == full.written == [] and replayed.files_read == 0
    assert snapshot(out) == before


def test_findings_keep_their_file_and_line(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    broken = declarations / "accounts" / "acct-456.yaml"
    broken.write_text(broken.read_text().replace("max_tokens: 4000", "max_tokens: [4000"))
    first = _reconciler(catalog, declarations, tmp_path / "out").run()
    assert first.exit_code == 1 and first.kept
    replayed = _reconciler(catalog, declarations, tmp_path / "out").replay()
    assert replayed is not None
    assert _lines(replayed) == _lines(first)
    assert any(f"{broken}:" in line for line in _lines(replayed))
    assert (replayed.exit_code, replayed.kept) == (1, first.kept)


@pytest.mark.parametrize("edit", ["content", "added", "removed", "same-size-same-mtime"])
def test_a_changed_declaration_file_is_read(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
    edit: str,
) -> None:
    target = declarations / "accounts" / "acct-456.yaml"
    text = target.read_text()
    if edit == "content":
        target.write_text(text.replace("max_tokens: 4000", "max_tokens: 5000"))
    elif edit == "added":
        (declarations / "accounts" / "extra.yaml").write_text(
            text.replace("acct-456", "acct-999").replace("max_tokens: 4000", "max_tokens: 5000")
        )
    elif edit == "removed":
        target.unlink()
    else:
        st = target.stat()
        target.write_text(text.replace("max_tokens: 4000", "max_tokens: 5000"))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert target.stat().st_size == st.st_size
    assert _reconciler(catalog, declarations, tmp_path / "out").replay() is None
    full = _reconciler(catalog, declarations, tmp_path / "out").run()
    assert full.removed if edit == "removed" else full.written


def test_a_touched_file_with_the_same_content_is_still_replayed(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    target = declarations / "accounts" / "acct-456.yaml"
    target.write_text(target.read_text())  # a checkout rewriting the same bytes
    assert _reconciler(catalog, declarations, tmp_path / "out").replay() is not None


def test_a_deleted_output_is_repaired(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    out = tmp_path / "out"
    (out / "acct-456" / "openai.json").unlink()
    assert _reconciler(catalog, declarations, out).replay() is None
    assert _reconciler(catalog, declarations, out).run().written == ["acct-456"]
    assert (out / "acct-456" / "openai.json").is_file()
    assert _reconciler(catalog, declarations, out).replay() is not None


def test_an_output_edited_by_hand_is_treated_as_a_full_pass_treats_it(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    # A full pass trusts the record's hashes and leaves the edit (outputs are
    # the controller's; it repairs deletions, not edits): a replay does the same.
    out = tmp_path / "out"
    edited = out / "acct-456" / "openai.json"
    edited.write_text("{}\n")
    replayed = _reconciler(catalog, declarations, out).replay()
    full = _reconciler(catalog, declarations, out).run()
    assert replayed is not None and _lines(replayed) == _lines(full)
    assert full.written == [] and edited.read_text() == "{}\n"


def test_other_schemas_or_another_program_are_not_replayed(
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for path in schemafiles.schemas_dir().rglob("*.json"):
        target = schemas / path.relative_to(schemafiles.schemas_dir())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    assert (
        _reconciler(schemafiles.load_catalog.__wrapped__(schemas), declarations, out).replay()
        is not None
    )
    common = schemas / "common.json"
    document = json.loads(common.read_text())
    document["description"] = "changed"
    common.write_text(json.dumps(document))
    assert (
        _reconciler(schemafiles.load_catalog.__wrapped__(schemas), declarations, out).replay()
        is None
    )
    monkeypatch.setattr(version, "VERSION", "999")
    assert _reconciler(schemafiles.load_catalog(), declarations, out).replay() is None


def test_records_changed_by_another_writer_drop_the_snapshot(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    # Any program writing the records, an older version included, drops it.
    out = tmp_path / "out"
    with sqlite3.connect(out / outputs.STATE_DIR / outputs.STATE_FILE) as db:
        db.execute("UPDATE records SET files = '{}' WHERE namespace = 'acct-456'")
    assert _reconciler(catalog, declarations, out).replay() is None


def test_a_different_declarations_directory_is_not_replayed(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reconciling.PassReport,
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in declarations.rglob("*.yaml"):
        (copy / path.relative_to(declarations)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(declarations)).write_bytes(path.read_bytes())
    assert _reconciler(catalog, copy, tmp_path / "out").replay() is None


def test_the_cli_replays_the_same_report(
    cli: RunCli, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    first = cli("reconcile", declarations, "--output-dir", out, "-o", "json")
    second = cli("reconcile", declarations, "--output-dir", out, "-o", "json")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    for report in (one, two):
        del report["seconds"]
    one["unchanged"], one["written"] = len(one["written"]), []
    assert one == two
