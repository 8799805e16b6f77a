"""``settings-controller operator`` before it reaches a cluster: its flags (durations, the
Lease timings' order, booleans as Go writes them), an unusable kubeconfig (one line naming
the file, exit 1, never a traceback or a retry loop), and an unreachable API server (the
probes answer, /readyz says not ready, SIGTERM stops it)."""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import signal
import subprocess
import time

import pytest

from controller import cli
from controller.cluster import hosting, operating
from controller.commands import operator
from tests.operator import support

TOKEN = "Zq7TokVal-0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("1m30s", 90.0), ("500ms", 0.5), ("2", 2.0), ("1.5s", 1.5), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert operator.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "s", "15x", "-1s", "0s", "1s2", "nan", "999999h"])
def test_durations_refused(text: str) -> None:
    if text == "15":
        assert operator.duration(text) == 15.0  # plain seconds are fine
        return
    with pytest.raises(argparse.ArgumentTypeError):
        operator.duration(text)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(support.CLI), "operator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=support.guarded_env(pathlib.Path("/dev/null")),
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--leader-elect-renew-deadline=15s"],
            "the renew deadline (15s) must be shorter than the lease duration (15s)",
        ),
        (
            ["--leader-elect-retry-period=10s"],
            "the retry period (10s) must be shorter than the renew deadline (10s)",
        ),
        (["--leader-elect-lease-duration=1.5s"], "must be a whole number of seconds"),
        (["--leader-elect=maybe"], "expected true or false"),
        (["--metrics-secure=nope"], "expected true or false"),
        (["--log-format=xml"], "invalid choice"),
        (["--log-level=trace"], "invalid choice"),
        (["--metrics-bind-address=localhost"], "expected HOST:PORT"),
        (["--metrics-bind-address=:99999"], "expected HOST:PORT"),
    ],
)
def test_usage_errors_exit_2(flags: list[str], message: str) -> None:
    proc = _run(*flags, "--kubeconfig=/nonexistent")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def _options(monkeypatch: pytest.MonkeyPatch, *flags: str) -> operating.Options:
    """The Options ``operator`` hands the host for these flags (nothing started)."""
    handed: list[operating.Options] = []
    monkeypatch.setattr(hosting, "run", handed.append)
    args = cli.build_parser().parse_args(["operator", *flags])
    assert operator.run(args) == 0
    (options,) = handed
    return options


@pytest.mark.parametrize(
    ("flags", "interval", "timeout"),
    [
        ([], 300.0, 10.0),
        (["--connection-check-interval=30", "--connection-check-timeout=2"], 30.0, 2.0),
        # The spellings before, still in manifests and charts' extraArgs.
        (["--verify-interval=30", "--verify-timeout=2"], 30.0, 2.0),
        (["--verify-interval", "0"], 0.0, 10.0),
        # Mixed, the last spelling given wins (the chart appends extraArgs last).
        (["--connection-check-interval=30", "--verify-interval=0"], 0.0, 10.0),
        (["--verify-interval=0", "--connection-check-interval=30"], 30.0, 10.0),
        (["--verify-timeout=2", "--connection-check-interval=60"], 60.0, 2.0),
    ],
)
def test_connection_check_flags_in_both_spellings(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], interval: float, timeout: float
) -> None:
    options = _options(monkeypatch, *flags)
    assert (options.connection_check_interval, options.connection_check_timeout) == (
        interval,
        timeout,
    )


DOCS = (
    support.REPO / "README.md",
    support.REPO / "deploy" / "README.md",
    support.REPO / "deploy" / "chart" / "settings-controller" / "README.md",
    support.REPO / "deploy" / "chart" / "settings-controller" / "values.yaml",
)


def test_the_connection_check_flags_the_docs_name_are_the_operators(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = {doc: doc.read_text() for doc in DOCS}
    named = {
        m.group(0)
        for text in texts.values()
        for m in re.finditer(r"--(?:connection-check|verify)-[a-z]+", text)
    }
    assert {"--connection-check-interval", "--connection-check-timeout"} <= named
    for flag in sorted(named):  # a misspelt one is a usage error (SystemExit) here
        options = _options(monkeypatch, f"{flag}=7")
        assert 7.0 in (options.connection_check_interval, options.connection_check_timeout)
    # What the docs show to type (their sh and console blocks, the chart's example) is the
    # spelling --help shows; the old one is only named as still working.
    for doc, text in texts.items():
        shown = "".join(re.findall(r"```(?:sh|console)\n(.*?)```", text, flags=re.S))
        if doc.suffix == ".yaml" or doc.parent.name == "settings-controller":
            shown = text
        assert "--verify-" not in shown, doc


def test_the_old_connection_check_flags_are_hidden_and_still_checked() -> None:
    shown = subprocess.run(
        [str(support.CLI), "operator", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "--connection-check-interval" in shown.stdout
    assert "--connection-check-timeout" in shown.stdout
    assert "--verify" not in shown.stdout
    # Hidden is not unchecked: a bad value is a usage error in either spelling.
    for flag in ("--verify-interval=soon", "--connection-check-timeout=soon"):
        proc = _run(flag, "--kubeconfig=/nonexistent")
        assert proc.returncode == 2, proc.stderr
        assert "invalid float value: 'soon'" in proc.stderr and "Traceback" not in proc.stderr


def _kubeconfig(server: str = "https://127.0.0.1:1", context: str = "x") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": context,
            "users": [{"name": "u", "user": {"token": TOKEN}}],
        }
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("", "directory"),
        (f"users: [{{name: u, user: {{token: {TOKEN}}}]\n  bad: [", "not YAML at line"),
        ("just text", "not a kubeconfig"),
        (_kubeconfig(context="elsewhere"), "Context 'elsewhere' not found"),
        (
            json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []}),
            "not a kubeconfig (no 'contexts')",
        ),
        (
            _kubeconfig().replace('"server"', '"certificate-authority": "/no/ca.crt", "server"'),
            "/no/ca.crt",
        ),
    ],
    ids=[
        "missing",
        "a-directory",
        "garbage",
        "not-a-mapping",
        "no-such-context",
        "no-context",
        "missing-ca",
    ],
)
def test_an_unusable_kubeconfig_is_one_line_and_exit_1(
    tmp_path: pathlib.Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content == "":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    started = time.monotonic()
    proc = _run(f"--kubeconfig={path}", "--health-probe-bind-address=0", "--metrics-bind-address=0")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30  # no retry loop
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"settings-controller: error: kubeconfig {path}: ")
    assert problem in lines[0], lines[0]
    assert TOKEN[3:11] not in proc.stderr


def _answers(url: str) -> bool:
    try:
        return support.fetch(url, timeout=1)[0] == 200
    except OSError:
        return False


def test_an_unreachable_api_server_keeps_the_probes_up_and_not_ready(
    tmp_path: pathlib.Path,
) -> None:
    """Decided: an API server not answering at start is waited out (it may be restarting,
    and a crash loop would only add backoff), retrying the confinement check (then the
    Lease) every retry period, while
    /healthz answers and /readyz does not; the log says why once, not every 2 s."""
    path = tmp_path / "kubeconfig"
    path.write_text(_kubeconfig())
    health, metrics = support.free_port(), support.free_port()
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(support.CLI),
                "operator",
                f"--kubeconfig={path}",
                f"--health-probe-bind-address=127.0.0.1:{health}",
                f"--metrics-bind-address=127.0.0.1:{metrics}",
                "--log-format=text",
                "--log-level=warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=support.guarded_env(tmp_path / "egress"),
        )
    try:
        support.until(lambda: _answers(f"http://127.0.0.1:{health}/healthz"), "/healthz answers")
        assert support.fetch(f"http://127.0.0.1:{health}/readyz")[0] == 503
        status, body = support.fetch(f"https://127.0.0.1:{metrics}/metrics")
        assert status == 401 and "bearer token" in body
        time.sleep(5)  # two retry periods at least
        assert support.fetch(f"http://127.0.0.1:{health}/readyz")[0] == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    text = log.read_text()
    assert "Traceback" not in text
    lines = text.splitlines()
    # Text, not JSON, and warnings only (no "standing by", no start-up INFO lines).
    assert lines and not any(line.startswith("{") for line in lines), text
    assert not any(" INFO " in line or "[INFO" in line for line in lines), text
    # The first thing it waits for is the confinement check (before the Lease): said once.
    assert sum("confinement check:" in line and "retrying" in line for line in lines) == 1, text
    assert TOKEN[3:11] not in text
