"""Breaks of file mode's documented promises, found by feeding it what a Git checkout can hold.

Each test asserts the promise as the docs state it, so it fails on the code it was written
against; its docstring names the doc line and what broke.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import CLI, EXAMPLES, RunCli
from tests.filemode.outputs import MIDWRITE
from tests.harness.fixtures import until


def _copy(tmp_path: pathlib.Path, name: str = "declarations") -> pathlib.Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES, target)
    return target


def _model(out: pathlib.Path, namespace: str = "acct-789") -> str:
    return str(json.loads((out / namespace / "openai.json").read_text())["model"])


def test_a_file_name_that_is_not_utf8_gives_no_traceback(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:111 (reconcile exits 0 or 1, "errors reported") and COMMON "never a traceback";
    tests/RELIABILITY.md:69-76 (0 tracebacks for hostile files).

    Broke: a declaration file whose name is not UTF-8 (any byte string is a legal Linux file
    name; a Git checkout made on another system holds them) makes ``reconcile`` die with a
    ``UnicodeEncodeError`` traceback from the SQLite record (files/outputs.py save_snapshot, now files/snapshots.py save),
    on every later pass too."""
    root = _copy(tmp_path)
    os.rename(
        root / "accounts" / "acct-789.yaml", os.fsencode(root / "accounts") + b"/acct-\xff.yaml"
    )
    out = tmp_path / "out"
    done = cli("reconcile", root, "--output-dir", out)
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode in (0, 1)
    again = cli("reconcile", root, "--output-dir", out)
    assert "Traceback" not in again.stderr, again.stderr[-600:]


def test_a_trailing_document_separator_is_not_an_error(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """examples/README.md:477-479 ("They work in both modes": the same files go to
    ``kubectl apply -R -f``) and README.md:27 (file mode reads "a GitOps checkout").

    Broke: a trailing ``---`` (an empty last document, which kubectl skips and most generators
    emit) is "error: a document must be a mapping"; the whole file turns bad, so on a first
    pass its accounts are never written (files/loading.py load_text counts the empty document)."""
    root = _copy(tmp_path)
    with (root / "accounts" / "acct-123.yaml").open("a") as f:
        f.write("---\n")
    out = tmp_path / "out"
    done = cli("reconcile", root, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert (out / "acct-123" / "openai.json").is_file()


def test_max_tokens_in_the_output_is_an_integer(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """README.md:86-87 (``max_tokens`` is a "positive integer") and README.md:42 (the output's
    ``choices`` says ``"type":"integer"``); outputs are read by workloads.

    Broke: an override ``max_tokens: 100.0`` is accepted (JSON Schema calls 100.0 an integer)
    and written as ``"max_tokens":100.0``: a workload reading ``openai.json`` gets a float
    where the documented type is an integer (core/merging.py copies the YAML float as is)."""
    root = _copy(tmp_path)
    (root / "accounts" / "acct-789.yaml").write_text(
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: Account\n"
        "metadata: {name: acct-789}\nspec: {plan: pro, namespace: acct-789}\n---\n"
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
        "metadata: {name: openai, namespace: acct-789}\nspec:\n  overrides: {max_tokens: 100.0}\n"
    )
    out = tmp_path / "out"
    cli("reconcile", root, "--output-dir", out)
    value = json.loads((out / "acct-789" / "openai.json").read_text())["max_tokens"]
    assert isinstance(value, int), f"max_tokens written as {value!r}"


@pytest.fixture
def watcher(tmp_path: pathlib.Path) -> Iterator[Callable[[pathlib.Path], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    logs = []

    def start(directory: pathlib.Path) -> subprocess.Popen[str]:
        log = (tmp_path / "watch.log").open("w")
        logs.append(log)
        proc = subprocess.Popen(
            [str(CLI), "watch", str(directory), "--output-dir", str(tmp_path / "out")],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        until(
            lambda: "start:" in (tmp_path / "watch.log").read_text(),
            "the first pass",
            30,
            0.05,
            ignoring=MIDWRITE,
        )
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


def test_watch_follows_a_git_sync_symlink_swap_of_its_directory(
    tmp_path: pathlib.Path, watcher: Callable[[pathlib.Path], subprocess.Popen[str]]
) -> None:
    """README.md:27 (file mode reads "a GitOps checkout"), README.md:51-52 ("Edit anything ...
    while it runs: the affected outputs are rewritten within milliseconds"), README.md:112.

    Broke: with DIR a symlink swapped to a new revision (git-sync's layout: ``repo ->
    rev-2``), the swap itself is seen, but the watch stays on the old target: edits in the new
    revision are not seen until the periodic rescan (30 s by default) (files/watching.py
    ``_rearm``/``_arm``: the re-armed watch on the same path most likely still follows the
    old target; a real directory renamed into place is followed correctly)."""
    (tmp_path / "rev1").mkdir()
    shutil.copytree(EXAMPLES, tmp_path / "rev1" / "d")
    shutil.copytree(EXAMPLES, tmp_path / "rev2" / "d")
    link = tmp_path / "repo"
    link.symlink_to("rev1/d")
    watcher(link)
    out = tmp_path / "out"
    assert _model(out) == "gpt-4o-mini"
    (tmp_path / "next").symlink_to("rev2/d")
    os.rename(tmp_path / "next", link)  # git-sync's atomic swap
    time.sleep(1.0)
    global_ = tmp_path / "rev2" / "d" / "global.yaml"
    global_.write_text(global_.read_text().replace("model: gpt-4o-mini", "model: gpt-4.1"))
    until(
        lambda: _model(out) == "gpt-4.1",
        "the edit after the swap applied",
        10,
        0.05,
        ignoring=MIDWRITE,
    )


def test_ctrl_c_stops_watch_with_exit_130(
    tmp_path: pathlib.Path, watcher: Callable[[pathlib.Path], subprocess.Popen[str]]
) -> None:
    """README.md:127 ("A closed pipe exits 141 and Ctrl-C 130, without a traceback");
    README.md:34 (``make run`` says "Ctrl-C to stop").

    Broke: ``watch`` (what ``make run`` runs) stopped with Ctrl-C exits 0, not 130
    (commands/watch.py turns SIGINT into a clean stop and returns 0)."""
    proc = watcher(_copy(tmp_path))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["operator", "--help"]])
def test_a_closed_pipe_exits_141_for_every_command(args: list[str]) -> None:
    """README.md:127 ("A closed pipe exits 141 ..., without a traceback").

    Broke: ``--version`` and ``--help`` (argparse's own printing, before cli.main's
    BrokenPipeError handler runs) exit 0 when stdout is a closed pipe, so
    ``settings-controller --help | head -1`` style pipelines report success for output that
    was never written (cli.py: argparse's ``exit`` bypasses the 141 path)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(CLI), *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr


def test_get_accepts_the_kubernetes_spelling_of_the_type(cli: RunCli) -> None:
    """deploy/README.md:68-71 ("the IntegrationSettings for image_generation is named
    image-generation (the core accepts either spelling, so the same file works in file mode)")
    and README.md:114 (``get ACCOUNT [TYPE]`` exits 0 / 1).

    Broke: ``get acct-123 image-generation`` — the name ``kubectl get is`` shows — exits 2 with
    "unknown integration type 'image-generation'" (commands/get.py checks TYPE against the
    catalog's underscore names only)."""
    done = cli("get", "acct-123", "image-generation", "-d", EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert "image_generation" in done.stdout


def test_an_unreadable_declaration_file_keeps_the_last_good_output(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:129-132 ("Errors never lose a previously good output: a file that stops
    parsing ... keeps the last good output of every account it fed") and README.md:111
    (reconcile exits 1 when errors are reported).

    Broke: a declaration file that turns into a dangling symlink (a checkout or volume mid-swap,
    a link to a file on an unmounted volume) is silently treated as deleted: ``reconcile`` exits
    0 and removes the account's outputs (files/reconciling.py ``_stamp`` returns None for any
    OSError, so the file counts as gone instead of "cannot read")."""
    root = _copy(tmp_path)
    out = tmp_path / "out"
    assert cli("reconcile", root, "--output-dir", out).returncode == 0
    target = root / "accounts" / "acct-123.yaml"
    target.unlink()
    target.symlink_to(tmp_path / "unmounted" / "acct-123.yaml")
    done = cli("reconcile", root, "--output-dir", out)
    assert (out / "acct-123" / "openai.json").is_file(), done.stderr
    assert done.returncode == 1 and "acct-123.yaml" in done.stderr


# Values that the schemas' patterns refuse (RE2 in the admission policies, any anchored
# match), but that Python's ``re.search`` lets through: ``$`` also matches before a final
# newline.
TRAILING_NEWLINE = {
    "image model": (
        "IntegrationSettings",
        "metadata: {name: image-generation, namespace: acct-789}\n"
        'spec: {overrides: {model: "dall-e-3\\n"}}\n',
    ),
    "sizes value": (
        "IntegrationSettings",
        "metadata: {name: image-generation, namespace: acct-789}\n"
        'spec: {overrides: {sizes: {featured: "1024x1024\\n"}}}\n',
    ),
    "sizes name": (
        "IntegrationSettings",
        "metadata: {name: image-generation, namespace: acct-789}\n"
        'spec: {overrides: {sizes: {"featured\\n": "1024x1024"}}}\n',
    ),
    "account namespace": (
        "Account",
        'metadata: {name: acct-nl}\nspec: {plan: pro, namespace: "acct-nl\\n"}\n',
    ),
}


@pytest.mark.parametrize("case", sorted(TRAILING_NEWLINE))
def test_a_trailing_newline_does_not_pass_a_pattern(
    cli: RunCli, tmp_path: pathlib.Path, case: str
) -> None:
    """deploy/README.md:131-137 (the policies and the core apply the same rules and
    "assert the same verdict"), README.md:86-88 (``sizes`` is name -> ``WIDTHxHEIGHT``) and
    README.md:113 (``validate``: schema checks, exit 1 on a problem).

    Broke: every schema ``pattern`` is checked with Python's ``re.search``, where ``$``
    matches before a trailing newline: ``model: "dall-e-3\\n"``, a size ``"1024x1024\\n"``,
    a size named ``"featured\\n"`` and an Account namespace ``"acct-nl\\n"`` pass
    ``validate`` (exit 0) and reach the outputs (``OUT/acct-nl\\n/``, a ConfigMap whose
    namespace kubectl refuses), while the admission policies (RE2) refuse them
    (core/validation.py / the catalog's JSON Schema validator)."""
    kind, body = TRAILING_NEWLINE[case]
    root = _copy(tmp_path)
    (root / "accounts" / "extra.yaml").write_text(
        f"apiVersion: integrations.igny8.com/v1alpha1\nkind: {kind}\n{body}"
    )
    done = cli("validate", root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "extra.yaml" in done.stdout + done.stderr


def test_validate_a_file_named_twice_reports_no_false_duplicate(cli: RunCli) -> None:
    """README.md:113 (``validate PATH...``: one ``file:line: error`` per problem, exit 0 / 1)
    and README.md:357-363 (run it in CI before merging).

    Broke: the same file reached by two spellings (``validate examples
    $PWD/examples/global.yaml``, as a CI script that validates the tree plus the changed files
    does) is loaded twice and reported as "GlobalIntegrationSettings is a singleton, but it is
    declared more than once": exit 1 for declarations that have no problem
    (commands/validate.py keys files by the spelling given, not the file)."""
    done = cli("validate", "examples", EXAMPLES / "global.yaml", cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stdout
    assert "declared more than once" not in done.stdout


def test_get_with_a_relative_output_dir(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """README.md:114 (``get ACCOUNT [TYPE] -d DIR [--output-dir OUT]``, exit 0 / 1) and
    README.md:110-111 (the same ``--output-dir OUT`` as ``reconcile``, run from a checkout).

    Broke: after ``reconcile examples --output-dir out`` (a relative OUT, as every doc writes
    it), ``get acct-123 -d examples --output-dir out`` dies with a ValueError traceback:
    "relative path can't be expressed as a file URI" (files/outputs.py ``lookup``, now files/records.py, calls
    ``path.as_uri()`` on the relative path)."""
    _copy(tmp_path, "examples")
    assert cli("reconcile", "examples", "--output-dir", "out", cwd=tmp_path).returncode == 0
    done = cli("get", "acct-123", "openai", "-d", "examples", "--output-dir", "out", cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode == 0
    assert "Custom settings" in done.stdout


def test_a_mounted_volume_with_a_subdirectory_is_read(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """README.md:27 (file mode reads "a directory of YAML declarations (a GitOps checkout, a
    mounted ConfigMap)") and README.md:112 (``..data`` symlink swaps of ConfigMap volumes).

    Broke: the kubelet's atomic writer publishes every top-level entry of a ConfigMap, Secret
    or projected volume as a symlink into ``..data``; an entry with a path
    (``items: [{key: acct-123, path: accounts/acct-123.yaml}]``) makes ``accounts`` a symlink
    to a directory. ``discover`` walks without following directory symlinks, so every file
    under it is silently ignored: "1 file checked", 0 accounts rendered, exit 0 (and a pass
    after such a remount removes every account's outputs) (files/loading.py ``discover``,
    ``os.walk(followlinks=False)``)."""
    volume = tmp_path / "volume"
    payload = volume / "..2026_12_06_10_00_00.000000001"
    payload.mkdir(parents=True)
    shutil.copy(EXAMPLES / "global.yaml", payload / "global.yaml")
    shutil.copytree(EXAMPLES / "accounts", payload / "accounts")
    (volume / "..data").symlink_to(payload.name)
    (volume / "global.yaml").symlink_to("..data/global.yaml")
    (volume / "accounts").symlink_to("..data/accounts")
    out = tmp_path / "out"
    done = cli("reconcile", volume, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "acct-123",
        "acct-456",
        "acct-789",
        "acct-free",
        "acct-paused",
    ]


def test_validate_prints_one_line_per_problem_whatever_the_file_name(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:113 (``validate``: "``file:line: error: object: message`` per problem"),
    read by CI and editors line by line.

    Broke: a file name holding a newline (legal on Linux and in Git) is printed raw, so one
    problem becomes two lines, the second of which reads as a problem in another file
    (``fn-global.yaml:1: error: ...``): the format can be forged from a checkout
    (commands/common.py ``print_findings`` writes the path unescaped)."""
    root = _copy(tmp_path)
    (root / "accounts" / "x\nforged.yaml:1: error: planted.yaml").write_text("kind: [\n")
    done = cli("validate", root)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 3, lines  # two notes of the examples, one error
    assert all(line.startswith(str(root)) for line in lines), lines
