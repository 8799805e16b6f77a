"""The command line's manners, through the installed CLI in real subprocesses: ``--version``,
``-o`` as a format and ``--output-dir`` (and the deprecated ``--output OUT``), a closed pipe,
Ctrl-C, shell completion sourced in a real bash, the progress line on a pty, ``render``."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pty
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from controller import cli, version
from tests.bench import generate
from tests.conftest import CLI, EXAMPLES, RunCli

ACCOUNTS = ["acct-123", "acct-456", "acct-789", "acct-free", "acct-paused"]


def test_version(cli: RunCli) -> None:
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"settings-controller {version.VERSION}\n"


def test_version_is_what_importlib_metadata_says(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from the .dist-info directory's name (no importlib.metadata import at start-up);
    where that is not clear-cut (two versions side by side), as importlib.metadata says."""
    from importlib import metadata

    def installed(directory: pathlib.Path, number: str) -> None:
        info = directory / f"Settings_Controller-{number}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: settings-controller\nVersion: {number}\n"
        )

    version._version.cache_clear()
    assert version._version() == metadata.version("settings-controller")
    first = tmp_path / "first"
    first.mkdir()
    installed(first, "9.9.1")
    monkeypatch.setattr(sys, "path", [str(first), *sys.path])
    version._version.cache_clear()
    assert version._version() == metadata.version("settings-controller") == "9.9.1"
    installed(first, "9.9.0")  # a stale one beside it
    version._version.cache_clear()
    assert version._version() == metadata.version("settings-controller")
    version._version.cache_clear()


def test_output_dir_and_output_format(cli: RunCli, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    done = cli("reconcile", EXAMPLES, "--output-dir", out, "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["accounts"], sorted(report["written"]), report["errors"]) == (5, ACCOUNTS, 0)
    assert "deprecated" not in done.stderr
    assert (out / "acct-123" / "openai.json").is_file()
    again = cli("reconcile", EXAMPLES, "--output-dir", out, "-o", "yaml")
    assert yaml.safe_load(again.stdout)["unchanged"] == 5


@pytest.mark.parametrize("flag", ["--output", "-o"])
def test_output_as_directory_still_works_with_a_warning(
    cli: RunCli, tmp_path: pathlib.Path, flag: str
) -> None:
    out = tmp_path / "out"
    done = cli("reconcile", EXAMPLES, flag, out)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "deprecated" in line]
    assert warnings == [
        f"settings-controller: warning: --output OUT is deprecated for reconcile, use "
        f"--output-dir {out} (-o/--output is an output format)"
    ]
    assert done.stdout == ""  # a directory, not a format: no report on stdout
    assert (out / "acct-123" / "integration-settings.yaml").is_file()


def test_output_mistakes_are_usage_errors(cli: RunCli, tmp_path: pathlib.Path) -> None:
    missing = cli("reconcile", EXAMPLES)
    assert missing.returncode == 2 and "--output-dir OUT is required" in missing.stderr
    both = cli("reconcile", EXAMPLES, "--output", tmp_path / "a", "--output-dir", tmp_path / "b")
    assert both.returncode == 2 and "both given" in both.stderr
    watch = cli("watch", EXAMPLES, "-o", "yaml", "--output-dir", tmp_path / "w")
    assert watch.returncode == 2
    assert watch.stderr.splitlines()[-1] == (
        "settings-controller watch: argument -o/--output: invalid choice: 'yaml' "
        "(choose from 'text', 'json')"
    )
    assert not (tmp_path / "w").exists()


def test_a_wrong_format_names_the_formats(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """`reconcile -o table` said "not an output format" without naming those it has."""
    done = cli("reconcile", EXAMPLES, "--output-dir", tmp_path / "o", "-o", "table")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "settings-controller reconcile: argument -o/--output: invalid choice: 'table' "
        "(choose from 'json', 'yaml')"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_subcommand(
    cli: RunCli, tmp_path: pathlib.Path, where: str
) -> None:
    """`-v` was accepted only before the subcommand ("unrecognized arguments: -v"). Past
    20 accounts a pass logs counts; -v lists every account written, wherever it stands."""
    declared = generate.generate(25, tmp_path / "declarations")
    args = ["reconcile", str(declared), "--output-dir"]
    quiet = cli(*args, tmp_path / "quiet")
    assert quiet.returncode == 0 and " INFO wrote " not in quiet.stderr, quiet.stderr
    out = tmp_path / "verbose"
    done = cli(*(["-v", *args, out] if where == "before" else [*args, out, "-v"]))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(" INFO wrote ") == 25


def test_validate_yaml(cli: RunCli) -> None:
    done = cli("validate", EXAMPLES, "-o", "yaml")
    assert done.returncode == 0, done.stderr
    report = yaml.safe_load(done.stdout)
    assert (report["files"], report["errors"], len(report["findings"])) == (6, 0, 2)


def test_closed_pipe_exits_141_without_a_traceback(tmp_path: pathlib.Path) -> None:
    # The reader is gone before the first write: deterministic, unlike racing `head`.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(CLI), "validate", str(EXAMPLES), "-o", "json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "BrokenPipe" not in done.stderr


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["operator", "--help"]])
def test_help_written_into_a_closed_pipe_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """argparse swallows an OSError of its own printing and exits 0: a help text larger than
    stdout's buffer (the write itself fails, not the final flush) would then report success.
    The parser lets it through to ``main``, whose BrokenPipeError path exits 141."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    with pytest.raises(BrokenPipeError):
        cli.build_parser().parse_args(args)


def test_the_head_pipeline_of_the_issue() -> None:
    done = subprocess.run(
        ["bash", "-c", f"'{CLI}' validate '{EXAMPLES}' -o json | head -c 100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert len(done.stdout) == 100 and done.stdout.startswith("{")
    assert done.stderr == ""


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: pathlib.Path) -> None:
    # An API server that accepts and never answers: `get` waits in its read.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        proc = subprocess.Popen(
            [str(CLI), "get", "acct-123", "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server.settimeout(30)
        conn, _ = server.accept()  # it is now waiting for the answer
        with conn:
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out == ""


def _bash(script: str) -> str:
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _complete(words: str) -> set[str]:
    """What bash offers after ``words`` (the last word being completed), the script sourced."""
    script = f"""
source <('{CLI}' completion bash)
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="{words}"
COMP_POINT=${{#COMP_LINE}}
func=$(complete -p settings-controller | sed 's/.*-F \\([^ ]*\\) .*/\\1/')
"$func" settings-controller "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    return {line.strip() for line in _bash(script).splitlines() if line.strip()}


def test_bash_completion_from_the_parser() -> None:
    assert {"reconcile", "render"} <= _complete("settings-controller re")
    assert {"get", "reconcile", "render", "completion", "validate"} <= _complete(
        "settings-controller ''"
    )
    assert _complete("settings-controller get acct-1 -o ''") == {"table", "json", "yaml"}
    assert _complete("settings-controller completion ''") == {"bash", "zsh"}
    assert "--output-dir" in _complete("settings-controller reconcile examples --out")


def test_zsh_completion_is_generated(cli: RunCli) -> None:
    done = cli("completion", "zsh")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#compdef settings-controller")
    assert "render" in done.stdout and "--output-dir" in done.stdout


def test_completion_offers_directories_and_files_where_arguments_take_them(cli: RunCli) -> None:
    """The hints are shtab's only once `completion` runs (shtab is not imported otherwise)."""
    bash = cli("completion", "bash").stdout
    assert "_shtab_settings_controller_reconcile_pos_0_COMPGEN=_shtab_compgen_dirs" in bash
    assert "_shtab_settings_controller_get___output_dir_COMPGEN=_shtab_compgen_dirs" in bash
    assert "_shtab_settings_controller_validate___global_COMPGEN=_shtab_compgen_files" in bash
    zsh = cli("completion", "zsh").stdout
    assert "_files -/" in zsh and "_files" in zsh.replace("_files -/", "")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """3,000 accounts: a pass long enough for a few progress redraws."""
    return generate.generate(3000, tmp_path_factory.mktemp("many") / "declarations")


def test_progress_line_on_a_terminal(many: pathlib.Path, tmp_path: pathlib.Path) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(CLI), "reconcile", str(many), "--output-dir", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = seen.decode()
    redraws = [part for part in text.split("\r") if part.startswith("reconcile: ")]
    assert redraws, text[:2000]
    assert any(" merge " in r or " write " in r for r in redraws)
    last = [r for r in redraws if "/3000 " in r][-1]
    assert "/s, ETA " in last
    assert "reconciled 3000 accounts" in text  # the summary, after the line is erased
    assert "INFO wrote " not in text  # no line per account on a large pass


def test_no_progress_and_one_summary_when_not_a_terminal(
    cli: RunCli, many: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    done = cli("reconcile", many, "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if "reconciled 3000 accounts" in line] == lines[-1:]
    assert not any(" wrote " in line for line in lines)
    verbose = cli("-v", "reconcile", many, "--output-dir", tmp_path / "verbose")
    assert sum(" wrote " in line for line in verbose.stderr.splitlines()) == 3000


def test_render_is_the_reconcile_output_as_a_stream(cli: RunCli, tmp_path: pathlib.Path) -> None:
    done = cli("render", EXAMPLES)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [d["metadata"]["namespace"] for d in docs] == ACCOUNTS
    out = tmp_path / "out"
    assert cli("reconcile", EXAMPLES, "--output-dir", out).returncode == 0
    files = "".join(
        "---\n" + (out / ns / "integration-settings.yaml").read_text() for ns in ACCOUNTS
    )
    assert done.stdout == files  # byte for byte what file mode writes
    with_ns = cli("render", EXAMPLES, "--namespaces")
    kinds = [d["kind"] for d in yaml.safe_load_all(with_ns.stdout) if d]
    assert kinds == ["Namespace", "ConfigMap"] * 5


def test_render_errors_go_to_stderr_and_valid_accounts_still_print(
    cli: RunCli, declarations: pathlib.Path
) -> None:
    broken = declarations / "accounts" / "acct-456.yaml"
    broken.write_text(broken.read_text().replace("plan: pro", "plan: [pro"))
    done = cli("render", declarations)
    assert done.returncode == 1
    assert "acct-456.yaml" in done.stderr and "error" in done.stderr
    namespaces = [d["metadata"]["namespace"] for d in yaml.safe_load_all(done.stdout) if d]
    assert namespaces == [ns for ns in ACCOUNTS if ns != "acct-456"]


GENERATOR_HEAD = "apiVersion: integrations.igny8.com/v1alpha1\nkind: SettingsRender\n"


@pytest.mark.parametrize(
    "declarations_line",
    [
        "declarations: declarations",
        "{declarations: 'declarations'}",
        'declarations: "declarations" # c',
    ],
)
def test_render_takes_its_directory_from_a_generator_file(
    cli: RunCli, declarations: pathlib.Path, declarations_line: str
) -> None:
    # kustomize runs the exec generator from the kustomization's directory.
    generator = declarations.parent / "settings.yaml"
    generator.write_text(declarations_line + "\n")
    done = cli("render", "--generator", "settings.yaml", cwd=declarations.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout == cli("render", declarations).stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("declarations: [a\n", "settings.yaml:2: invalid YAML"),
        ("- declarations\n", "one generator object"),
        (GENERATOR_HEAD + "---\n" + GENERATOR_HEAD, "one generator object"),
        (GENERATOR_HEAD, "must name a directory"),
        (GENERATOR_HEAD + "declarations: [a, b]\n", "must name a directory"),
        (GENERATOR_HEAD + "declarations: ''\n", "must name a directory"),
        (GENERATOR_HEAD + "declarations: nowhere\n", "nowhere: not a directory"),
        (b"declarations: \xff\n", "not valid UTF-8"),
    ],
)
def test_a_bad_generator_file_is_a_usage_error_naming_it(
    cli: RunCli, tmp_path: pathlib.Path, content: str | bytes | None, says: str
) -> None:
    generator = tmp_path / "settings.yaml"
    if isinstance(content, bytes):
        generator.write_bytes(content)
    elif content is not None:
        generator.write_text(content)
    done = cli("render", "--generator", "settings.yaml", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "render: settings.yaml" in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_render_needs_exactly_one_of_dir_and_generator(cli: RunCli, tmp_path: pathlib.Path) -> None:
    (tmp_path / "settings.yaml").write_text("declarations: .\n")
    for args in ([], [EXAMPLES, "--generator", tmp_path / "settings.yaml"]):
        done = cli("render", *args)
        assert done.returncode == 2 and "either DIR or --generator" in done.stderr


def test_discover_claims_a_directory_exactly_when_render_finds_its_global(
    cli: RunCli, declarations: pathlib.Path
) -> None:
    # Argo CD's plugin discovery: output claims the directory; any exit but 0 is an error.
    claimed = cli("render", ".", "--discover", cwd=declarations)
    assert (claimed.returncode, claimed.stdout) == (0, "./global.yaml\n")
    global_ = declarations / "global.yaml"
    text = global_.read_text()
    # Another spelling of the same YAML, and a broken file beside it: still ours (render
    # then fails the sync with the error instead of Argo CD applying the raw files).
    global_.write_text(
        text.replace("kind: GlobalIntegrationSettings", "kind: !!str 'GlobalIntegrationSettings'")
    )
    (declarations / "broken.yaml").write_text("kind: [\n")
    assert cli("render", ".", "--discover", cwd=declarations).stdout == "./global.yaml\n"
    # No false positives: the kind's line in a comment, a block scalar, a hidden directory.
    global_.unlink()
    (declarations / "notes.yaml").write_text(
        "# kind: GlobalIntegrationSettings\napiVersion: v1\nkind: ConfigMap\n"
        "data:\n  example: |\nkind: GlobalIntegrationSettings\n".replace("|\nkind", "|\n    kind")
    )
    (declarations / ".git").mkdir()
    (declarations / ".git" / "global.yaml").write_text(text)
    unclaimed = cli("render", ".", "--discover", cwd=declarations)
    assert (unclaimed.returncode, unclaimed.stdout) == (0, "")


def test_watch_takes_the_deprecated_output_spelling_too(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(CLI), "watch", str(EXAMPLES), "--output", str(out), "--resync", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "acct-123" / "openai.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.splitlines()[0] == (
        f"settings-controller: warning: --output OUT is deprecated for watch, use "
        f"--output-dir {out} (-o/--output is an output format)"
    )
