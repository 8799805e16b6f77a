"""``watch`` follows edits the ways real tools make them: in place, by rename, by volume swap."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller import schemafiles
from controller.files import outputs, reconciling, records, reports, watching
from tests.conftest import CLI, EXAMPLES
from tests.filemode.outputs import MIDWRITE, effective, snapshot
from tests.harness.fixtures import until

TIMEOUT = 15.0


# The shared until at this module's pace; an output being written is "not yet".
wait_for = functools.partial(until, timeout=TIMEOUT, interval=0.02, ignoring=MIDWRITE)


class Watcher:
    def __init__(self, directory: pathlib.Path, out: pathlib.Path, log: pathlib.Path) -> None:
        self.out, self.log_path = out, log
        self._log = log.open("w")
        # A long resync: these tests prove that events, not the periodic rescan, drive updates.
        self.process = subprocess.Popen(
            [str(CLI), "watch", str(directory), "--output-dir", str(out), "--resync", "3600"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: "start:" in self.log, "the first pass")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def passes(self) -> int:
        return self.log.count(" in ") - self.log.count("watching ")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        self._log.close()
        return code


@pytest.fixture
def watch(tmp_path: pathlib.Path) -> Iterator[Callable[[pathlib.Path], Watcher]]:
    started: list[Watcher] = []

    def start(directory: pathlib.Path) -> Watcher:
        watcher = Watcher(directory, tmp_path / "out", tmp_path / "watch.log")
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def model(out: pathlib.Path, namespace: str = "acct-789") -> str:
    return str(effective(out, namespace, "openai")["model"])


OVERRIDE_789 = """\
apiVersion: integrations.igny8.com/v1alpha1
kind: IntegrationSettings
metadata: {name: openai, namespace: acct-789}
spec:
  overrides: {model: gpt-4o}
"""


def test_follows_an_edit_and_rewrites_only_that_account(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    w = watch(declarations)
    before = snapshot(w.out)
    (declarations / "accounts" / "acct-789-openai.yaml").write_text(OVERRIDE_789)
    wait_for(lambda: model(w.out) == "gpt-4o", "acct-789 to pick up its override")
    after = snapshot(w.out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"acct-789/integration-settings.yaml", "acct-789/openai.json"}
    wait_for(
        lambda: "accounts/acct-789-openai.yaml: 1 written, 0 unchanged" in w.log,
        "the change's log line",
    )
    assert w.stop() == 0
    assert "stopped" in w.log


def test_a_changed_file_with_a_newline_in_its_name_is_logged_on_one_line(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    """The pass's log line names the changed files: a name holding a line break is escaped,
    so the log keeps one record a line (what a log shipper splits on)."""
    w = watch(declarations)
    (declarations / "accounts" / "x\n2026 INFO forged.yaml").write_text(OVERRIDE_789)
    wait_for(lambda: model(w.out) == "gpt-4o", "acct-789 to pick up its override")
    wait_for(
        lambda: "accounts/x\\n2026 INFO forged.yaml: 1 written" in w.log, "the change's log line"
    )
    assert w.stop() == 0
    assert all(line.isprintable() for line in w.log.splitlines())
    assert not any(line.startswith("2026 INFO forged") for line in w.log.splitlines())


def test_a_symlinked_directory_that_appears_is_entered(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    """A link to a directory inside DIR (here a hidden one, as a projected volume's
    ``accounts -> ..data/accounts``) made while watching: inotify reports a file, not a
    directory, and no declaration name; the watch rescans and reads what it leads to."""
    shared = declarations / ".shared"
    shared.mkdir()
    (shared / "acct-789-openai.yaml").write_text(OVERRIDE_789)
    w = watch(declarations)
    assert model(w.out) == "gpt-4o-mini"
    (declarations / "linked").symlink_to(".shared")
    wait_for(lambda: model(w.out) == "gpt-4o", "the override behind the new link")
    assert w.stop() == 0


def test_global_change_reaches_every_non_overrider(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    w = watch(declarations)
    global_ = declarations / "global.yaml"
    global_.write_text(global_.read_text().replace("model: gpt-4o-mini", "model: gpt-4.1"))
    wait_for(lambda: model(w.out, "acct-free") == "gpt-4.1", "the new default")
    assert model(w.out) == "gpt-4.1" and model(w.out, "acct-123") == "gpt-4o"
    wait_for(lambda: "global.yaml: 3 written, 2 unchanged" in w.log, "the pass log")


def test_editor_save_through_rename(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    w = watch(declarations)
    target = declarations / "accounts" / "acct-789.yaml"
    tmp = declarations / "accounts" / ".acct-789.yaml.swp"
    tmp.write_text(target.read_text() + "---\n" + OVERRIDE_789)
    os.replace(tmp, target)
    wait_for(lambda: model(w.out) == "gpt-4o", "the renamed-over file")
    # vim's backupcopy=no: move the original away, write a new file.
    os.replace(target, declarations / "accounts" / "acct-789.yaml~")
    target.write_text(
        (declarations / "accounts" / "acct-789.yaml~").read_text().replace("gpt-4o", "gpt-4.1")
    )
    (declarations / "accounts" / "acct-789.yaml~").unlink()
    wait_for(lambda: model(w.out) == "gpt-4.1", "the rewritten file")


def test_configmap_volume_symlink_swap(
    watch: Callable[[pathlib.Path], Watcher], tmp_path: pathlib.Path
) -> None:
    # The layout kubelet's atomic writer gives a mounted ConfigMap.
    volume = tmp_path / "volume"
    volume.mkdir()
    first = volume / "..2026_11_28_00_00_00.000000001"
    shutil.copytree(EXAMPLES / "accounts", first)
    shutil.copy(EXAMPLES / "global.yaml", first / "global.yaml")
    (volume / "..data").symlink_to(first.name)
    for name in os.listdir(first):
        (volume / name).symlink_to(f"..data/{name}")
    w = watch(volume)
    assert model(w.out) == "gpt-4o-mini"

    second = volume / "..2026_11_28_00_01_00.000000002"
    shutil.copytree(first, second)
    (second / "acct-789.yaml").write_text(
        (second / "acct-789.yaml").read_text() + "---\n" + OVERRIDE_789
    )
    (volume / "..data_tmp").symlink_to(second.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    shutil.rmtree(first)
    wait_for(lambda: model(w.out) == "gpt-4o", "the swapped volume to be read")
    assert "Traceback" not in w.log


@pytest.mark.parametrize("layout", ["dir-is-the-link", "link-above-dir"])
def test_git_sync_swaps_followed_by_events(
    watch: Callable[[pathlib.Path], Watcher], tmp_path: pathlib.Path, layout: str
) -> None:
    """git-sync publishes each revision as ``repo -> rev-N`` swapped by rename; DIR is the
    link, or a directory inside it (``repo/config``). Edits before and after two swaps are
    followed by events (the rescan here is an hour away)."""
    for rev in ("rev1", "rev2", "rev3"):
        shutil.copytree(EXAMPLES, tmp_path / rev / "config")
    link = tmp_path / "repo"
    link.symlink_to("rev1/config" if layout == "dir-is-the-link" else "rev1")
    w = watch(link if layout == "dir-is-the-link" else link / "config")
    before = tmp_path / "rev1" / "config" / "accounts" / "acct-789.yaml"
    before.write_text(before.read_text() + "---\n" + OVERRIDE_789)
    wait_for(lambda: model(w.out) == "gpt-4o", "an edit before the swap")
    for rev in ("rev2", "rev3"):
        (tmp_path / "next").symlink_to(f"{rev}/config" if layout == "dir-is-the-link" else rev)
        os.replace(tmp_path / "next", link)
        wait_for(lambda: model(w.out) == "gpt-4o-mini", f"the swap to {rev}")
        global_ = tmp_path / rev / "config" / "global.yaml"
        global_.write_text(global_.read_text().replace("model: gpt-4o-mini", "model: gpt-4.1"))
        wait_for(lambda: model(w.out) == "gpt-4.1", f"an edit in {rev} after the swap")
    assert w.stop() == 0


def test_directory_deleted_and_recreated(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    w = watch(declarations)
    before = snapshot(w.out)
    backup = declarations.parent / "backup"
    shutil.move(declarations, backup)
    wait_for(
        lambda: "declarations directory does not exist; outputs kept" in w.log,
        "the missing directory",
    )
    assert snapshot(w.out) == before  # nothing removed while it is gone
    shutil.copytree(backup, declarations)
    (declarations / "accounts" / "acct-789-openai.yaml").write_text(OVERRIDE_789)
    wait_for(lambda: model(w.out) == "gpt-4o", "the recreated directory to be watched")
    (declarations / "accounts" / "acct-789-openai.yaml").write_text(
        OVERRIDE_789.replace("gpt-4o", "gpt-4.1")
    )
    wait_for(lambda: model(w.out) == "gpt-4.1", "a later edit in the recreated directory")


def test_broken_edit_keeps_output_until_fixed(
    watch: Callable[[pathlib.Path], Watcher], declarations: pathlib.Path
) -> None:
    w = watch(declarations)
    path = declarations / "accounts" / "acct-123.yaml"
    good = path.read_text()
    before = {k: v for k, v in snapshot(w.out).items() if k.startswith("acct-123/")}
    path.write_text(good.replace("model: gpt-4o", "model: [gpt-4o"))
    wait_for(lambda: "acct-123.yaml:" in w.log and "invalid YAML" in w.log, "the YAML error")
    assert {k: v for k, v in snapshot(w.out).items() if k.startswith("acct-123/")} == before
    path.write_text(good.replace("model: gpt-4o", "model: gpt-4.1"))
    wait_for(lambda: model(w.out, "acct-123") == "gpt-4.1", "the fixed file")


def test_an_idle_watch_keeps_its_wal_small(
    declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Every periodic rescan rewrites the snapshot: the WAL of `state.sqlite` grew by each
    (333 KB after 5 minutes on 5 accounts) until SQLite's 4 MB autocheckpoint."""
    out = tmp_path / "out"
    reconciler = reconciling.Reconciler(
        schemafiles.load_catalog(), declarations, outputs.OutputDir(out)
    )
    wal = out / records.STATE_DIR / f"{records.STATE_FILE}-wal"
    sizes: list[int] = []
    run = reconciler.run

    def counted(changed: Any = None) -> reports.PassReport:
        report = run(changed)
        sizes.append(wal.stat().st_size if wal.exists() else 0)
        if len(sizes) >= 40:
            idle.stop()
        return report

    reconciler.run = counted  # type: ignore[method-assign]
    idle = watching.Watch(reconciler, lambda *_: None, resync=0.01)
    thread = threading.Thread(target=idle.run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(sizes) >= 40  # the first pass and 39 periodic rescans, nothing changed
    assert max(sizes) <= 64 * 1024, sizes


def test_json_lines_of_findings_and_writes_and_ctrl_c_exits_130(
    declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """`watch -o json` was "not an output format"; Ctrl-C exited 0 (the README says 130)."""
    lines_path = tmp_path / "watch.jsonl"
    with lines_path.open("w") as stdout, (tmp_path / "watch.log").open("w") as stderr:
        out = tmp_path / "out"
        command: list[str | pathlib.Path] = [CLI, "watch", declarations, "--output-dir", out]
        proc = subprocess.Popen(
            [*command, "-o", "json", "--resync", "3600"],
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        try:

            def events() -> list[dict[str, Any]]:
                text = lines_path.read_text()
                return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

            wait_for(lambda: any(e["event"] == "pass" for e in events()), "the first pass")
            first = events()
            assert sorted(e["namespace"] for e in first if e["event"] == "written") == [
                "acct-123",
                "acct-456",
                "acct-789",
                "acct-free",
                "acct-paused",
            ]
            notes = [e for e in first if e["event"] == "finding"]
            assert {(e["severity"], e["reason"]) for e in notes} == {
                ("note", "PlanForbidsOverrides"),
                ("note", "OverrideInactive"),
            }
            (declarations / "accounts" / "acct-789-openai.yaml").write_text(
                OVERRIDE_789.replace("gpt-4o", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123")
            )
            wait_for(lambda: len([e for e in events() if e["event"] == "pass"]) == 2, "a pass")
            second = events()[len(first) :]
            assert [e["event"] for e in second] == ["finding", "pass"]
            assert second[0]["reason"] == "CredentialFieldStripped"
            assert second[0]["file"].endswith("acct-789-openai.yaml") and second[0]["line"] == 5
            assert second[1]["what"] == "accounts/acct-789-openai.yaml"
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
    assert code == 130
    assert events()[-1] == {"event": "stopped", "signal": "SIGINT"}
    assert "AbCdEfGh" not in lines_path.read_text() + (tmp_path / "watch.log").read_text()
    assert "Traceback" not in (tmp_path / "watch.log").read_text()


def test_an_output_directory_inside_the_declarations_is_not_watched(
    declarations: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Breakit2: ``watch . --output-dir out`` read its own outputs back on the rescan its
    writes triggered (five ``unknown kind 'ConfigMap'`` errors). Events under OUT are the
    pass's own: ignored, so an edit costs one pass and nothing reads an output."""
    w = Watcher(declarations, declarations / "out", tmp_path / "watch.log")
    try:
        (declarations / "accounts" / "acct-789-openai.yaml").write_text(OVERRIDE_789)
        wait_for(lambda: model(w.out) == "gpt-4o", "acct-789 to pick up its override")
        wait_for(lambda: "1 written" in w.log, "the change's log line")
        time.sleep(1.5)  # room for the rescan the pass's own writes used to trigger
        (w.out / "acct-123" / "stray.yaml").write_text("kind: Account\n")
        time.sleep(1.5)
    finally:
        assert w.stop() == 0
    assert "ConfigMap" not in w.log and "stray" not in w.log, w.log
    assert "error:" not in w.log, w.log
    assert w.log.count(" errors, ") == 2, w.log  # two passes: the first and the edit's
