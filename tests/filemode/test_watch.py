"""``watch`` follows edits the ways real tools make them: in place, by rename, by volume swap."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import CLI, EXAMPLES
from tests.filemode.outputs import effective, snapshot

TIMEOUT = 15.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass  # an output mid-creation: look again
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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
