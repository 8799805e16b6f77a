"""A pass over unchanged declarations answers from the last complete pass's snapshot.

Each test runs a complete pass, then a new ``Reconciler`` and ``OutputDir``
(what a new ``reconcile`` process builds) and checks whether it may replay:
it must whenever nothing moved, and must not once anything a pass depends on
did. Where it may not, the full pass that follows is checked too.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
from typing import Any

import pytest

from controller import schemafiles, version
from controller.core import catalog as catalog_
from controller.files import outputs, reconciling, records, reports, snapshots
from tests.conftest import RunCli
from tests.filemode.outputs import snapshot


def _reconciler(
    cat: catalog_.Catalog, declarations: pathlib.Path, out: pathlib.Path
) -> reconciling.Reconciler:
    return reconciling.Reconciler(cat, declarations, outputs.OutputDir(out))


def _lines(report: reports.PassReport) -> list[str]:
    return [str(item) for item in report.findings]


@pytest.fixture
def done(
    catalog: catalog_.Catalog, declarations: pathlib.Path, tmp_path: pathlib.Path
) -> reports.PassReport:
    """A complete pass over examples/, old enough that no stamp is too recent to trust."""
    past = 1_600_000_000_000_000_000
    for path in declarations.rglob("*.yaml"):
        os.utime(path, ns=(past, past))
    return _reconciler(catalog, declarations, tmp_path / "out").run()


def test_unchanged_tree_is_replayed_without_reading_or_writing(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reports.PassReport,
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
    done: reports.PassReport,
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
    done: reports.PassReport,
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
    done: reports.PassReport,
) -> None:
    target = declarations / "accounts" / "acct-456.yaml"
    target.write_text(target.read_text())  # a checkout rewriting the same bytes
    assert _reconciler(catalog, declarations, tmp_path / "out").replay() is not None


def test_a_deleted_output_is_repaired(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reports.PassReport,
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
    done: reports.PassReport,
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
    done: reports.PassReport,
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
    done: reports.PassReport,
) -> None:
    # Any program writing the records, an older version included, drops it.
    out = tmp_path / "out"
    with sqlite3.connect(out / records.STATE_DIR / records.STATE_FILE) as db:
        db.execute("UPDATE records SET files = '{}' WHERE namespace = 'acct-456'")
    assert _reconciler(catalog, declarations, out).replay() is None


def test_a_different_declarations_directory_is_not_replayed(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reports.PassReport,
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


def _head(out: pathlib.Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(out / records.STATE_DIR / records.STATE_FILE)) as db:
        (text,) = db.execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
    head: dict[str, Any] = json.loads(text)
    return head


def test_stamps_too_recent_are_checked_by_content_then_aged_once_old_enough(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stamp taken within RACY_NS of a change may hide a second change in the same clock
    tick: such a file is read at every replay until a replay finds it old enough, and only
    that replay records it (so the next one trusts the stamp)."""
    out = tmp_path / "out"
    monkeypatch.setattr(snapshots, "RACY_NS", 3600 * 10**9)  # every stamp too recent
    done = _reconciler(catalog, declarations, out).run()
    head = _head(out)
    assert len(head["inputs"]["recent"]) == len(list(declarations.rglob("*.yaml")))
    assert set(head["outputs"]["recent"]) == set(
        _reconciler(catalog, declarations, out).out.records
    )  # type: ignore[union-attr]
    # Still too recent: replayed by content, and the head is left as it was.
    replayed = _reconciler(catalog, declarations, out).replay()
    assert replayed is not None and _lines(replayed) == _lines(done)
    assert _head(out) == head
    # A change keeping size and mtime (what a change in the same tick looks like) is read.
    target = declarations / "accounts" / "acct-456.yaml"
    text, st = target.read_text(), target.stat()
    target.write_text(text.replace("max_tokens: 4000", "max_tokens: 5000"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _reconciler(catalog, declarations, out).replay() is None
    target.write_text(text)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    monkeypatch.setattr(snapshots, "RACY_NS", 1)  # every stamp old enough now
    assert _reconciler(catalog, declarations, out).replay() is not None
    aged = _head(out)
    assert aged["inputs"]["recent"] == aged["outputs"]["recent"] == {}
    assert aged["report"] == head["report"] and aged["fingerprint"] == head["fingerprint"]
    replayed = _reconciler(catalog, declarations, out).replay()
    assert replayed is not None and _lines(replayed) == _lines(done)
    assert _head(out) == aged
    # Trusted now, the stamp still sees the same edit (its ctime moves).
    target.write_text(text.replace("max_tokens: 4000", "max_tokens: 5000"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _reconciler(catalog, declarations, out).replay() is None
    assert _reconciler(catalog, declarations, out).run().written == ["acct-456"]


def test_an_output_deleted_before_its_stamp_is_aged_is_seen(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(snapshots, "RACY_NS", 3600 * 10**9)
    _reconciler(catalog, declarations, out).run()
    (out / "acct-456" / "openai.json").unlink()
    monkeypatch.setattr(snapshots, "RACY_NS", 1)
    assert _reconciler(catalog, declarations, out).replay() is None
    assert _head(out)["outputs"]["recent"] != {}  # nothing aged by a replay that failed
    assert _reconciler(catalog, declarations, out).run().written == ["acct-456"]
    assert _reconciler(catalog, declarations, out).replay() is not None


def test_ageing_never_overwrites_a_snapshot_taken_meanwhile(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``watch`` may complete a pass between a replay's read of the head and its update:
    the update is conditional, so the newer snapshot (and its report) stays."""
    out = tmp_path / "out"
    monkeypatch.setattr(snapshots, "RACY_NS", 3600 * 10**9)
    _reconciler(catalog, declarations, out).run()
    target = declarations / "accounts" / "acct-456.yaml"
    check = snapshots._inputs_unmoved

    def racing(*args: Any) -> Any:
        seen = check(*args)
        target.write_text(target.read_text() + "  # edited\n")
        monkeypatch.setattr(snapshots, "RACY_NS", 3600 * 10**9)
        _reconciler(catalog, declarations, out).run()  # the other process's pass
        monkeypatch.setattr(snapshots, "RACY_NS", 1)
        return seen

    monkeypatch.setattr(snapshots, "RACY_NS", 1)
    monkeypatch.setattr(snapshots, "_inputs_unmoved", racing)
    assert _reconciler(catalog, declarations, out).replay() is not None
    monkeypatch.setattr(snapshots, "_inputs_unmoved", check)
    head = _head(out)
    assert head["inputs"]["recent"] != {}  # the newer pass's head, not the aged old one
    full = _reconciler(catalog, declarations, tmp_path / "fresh").run()
    replayed = _reconciler(catalog, declarations, out).replay()
    assert replayed is not None and _lines(replayed) == _lines(full)


def test_a_snapshot_of_the_previous_format_is_not_replayed_and_the_pass_says_nothing_new(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    done: reports.PassReport,
) -> None:
    """An upgrade finds the head an older version wrote (no format, no digests): a full
    pass, writing nothing and reporting what it did, then replays again."""
    out = tmp_path / "out"
    head = _head(out)
    old = {"fingerprint": head["fingerprint"], "report": head["report"]}
    with contextlib.closing(sqlite3.connect(out / records.STATE_DIR / records.STATE_FILE)) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'snapshot'", (json.dumps(old),))
        db.commit()
    assert _reconciler(catalog, declarations, out).replay() is None
    full = _reconciler(catalog, declarations, out).run()
    assert (full.written, full.removed, full.kept) == ([], [], done.kept)
    assert _lines(full) == _lines(done)
    assert _head(out)["format"] == snapshots.FORMAT
    assert _reconciler(catalog, declarations, out).replay() is not None


def test_output_directories_checked_in_a_child_process_give_the_same_answers(
    catalog: catalog_.Catalog,
    declarations: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 100,000 accounts the output directories are stat'ed in a forked child beside the
    declarations: it replays, ages, and sees a deleted output, a directory swapped for a
    symlink, and one gone, exactly as the same check in the process does."""
    monkeypatch.setattr(snapshots, "_FORK_FROM", 1)
    out = tmp_path / "out"
    monkeypatch.setattr(snapshots, "RACY_NS", 3600 * 10**9)
    done = _reconciler(catalog, declarations, out).run()
    replayed = _reconciler(catalog, declarations, out).replay()
    assert replayed is not None and _lines(replayed) == _lines(done)
    monkeypatch.setattr(snapshots, "RACY_NS", 1)
    assert _reconciler(catalog, declarations, out).replay() is not None
    assert _head(out)["outputs"]["recent"] == {}  # aged through the child's answer
    assert _reconciler(catalog, declarations, out).replay() is not None
    (out / "acct-456" / "openai.json").unlink()
    assert _reconciler(catalog, declarations, out).replay() is None
    assert _reconciler(catalog, declarations, out).run().written == ["acct-456"]
    assert _reconciler(catalog, declarations, out).replay() is not None
    (out / "acct-456").rename(tmp_path / "moved")
    (out / "acct-456").symlink_to(tmp_path / "moved")
    assert _reconciler(catalog, declarations, out).replay() is None
    (out / "acct-456").unlink()
    assert _reconciler(catalog, declarations, out).replay() is None
