"""Breaks of the command line's documented manners: exit codes and "never a traceback"."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

from tests.conftest import CLI, EXAMPLES, RunCli


def test_crds_into_a_path_that_is_a_file_is_an_error_not_a_traceback(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:117 (``crds [--output-dir DIR]``, exit 0) and README.md:110-127 with
    COMMON's "bad input: a clear error ..., never a traceback".

    Broke: ``crds --output-dir FILE`` (a typo, or a file where the directory was expected)
    ends in a ``FileExistsError`` traceback (commands/crds.py calls ``mkdir`` unguarded)."""
    target = tmp_path / "crd"
    target.write_text("not a directory\n")
    done = cli("crds", "--output-dir", target)
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode in (1, 2)
    assert str(target) in done.stderr


def test_watch_survives_an_output_it_cannot_write(tmp_path: pathlib.Path) -> None:
    """README.md:112 (``watch`` "runs until stopped"), README.md:129-132 (errors keep the last
    good outputs and are reported) and COMMON's "never a traceback".

    Broke: with an OUT it cannot create (here a file; likewise any OSError while opening the
    state record) the first pass reports "cannot write outputs" as it should, but the next
    periodic rescan dies with a ``NotADirectoryError`` traceback and ``watch`` exits 1:
    files/outputs.py ``save_snapshot`` (now files/snapshots.py ``save``) calls ``_connect()`` again in its error path, and
    ``_connect`` raises OSError, which is not caught there."""
    target = tmp_path / "out"
    target.write_text("not a directory\n")
    log = tmp_path / "watch.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(CLI), "watch", str(EXAMPLES), "--output-dir", str(target), "--resync", "0.5"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(6)
            alive = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
    text = log.read_text()
    assert "Traceback" not in text, text[-800:]
    assert alive or proc.returncode == 2


def test_ctrl_c_while_the_command_starts_shows_no_traceback() -> None:
    """README.md:127 ("... Ctrl-C 130, without a traceback").

    Broke: Ctrl-C in the first moments of a command (a user who notices a typo; here while
    the interpreter imports ``controller``, made deterministic by waiting for Python's own
    import-time trace) prints a ``KeyboardInterrupt`` traceback of the import machinery:
    the handler lives in ``cli.main``, and ``controller/cli.py`` imports every command module
    (aiohttp, kopf's dependencies, ...) before ``main`` runs. On this machine the window is
    about a second."""
    proc = subprocess.Popen(
        [str(CLI), "validate", str(EXAMPLES)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "controller.core" in line:  # the CLI's own imports have begun
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.stderr.close()  # else a ResourceWarning (an error under this suite) fails the test
    proc.wait(timeout=30)
    shown = "\n".join(line for line in rest.splitlines() if not line.startswith("import time"))
    assert "Traceback" not in shown, shown[-600:]
    assert proc.returncode in (130, -signal.SIGINT)


DEAD_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.mark.parametrize("spelling", ["list", "empty"])
def test_get_reads_kubeconfig_as_kubectl_does(tmp_path: pathlib.Path, spelling: str) -> None:
    """README.md:115 (``get ACCOUNT [TYPE] [--kubeconfig FILE]``: "the same table from a
    cluster (``$KUBECONFIG`` by default)"; also ``kubectl integrations get``).

    Broke: ``$KUBECONFIG`` as kubectl reads it is a list of files (``a:b``), and an empty
    value means unset (``~/.kube/config``). ``get`` passes the whole string to lightkube's
    ``KubeConfig.from_file``: "no usable kubeconfig: Configuration file a:b not found" /
    "Configuration file  not found", where kubectl (and ``get`` with ``KUBECONFIG=a``) reach
    the cluster of ``a`` (commands/views.py ``_from_cluster`` uses ``KubeConfig.from_env``).
    The cluster here is unreachable on purpose: reaching it is the proof that the file was
    read."""
    config = tmp_path / "config"
    config.write_text(DEAD_KUBECONFIG)
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(DEAD_KUBECONFIG)
    value = f"{config}{os.pathsep}{tmp_path / 'missing'}" if spelling == "list" else ""
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": value}
    done = subprocess.run(
        [str(CLI), "get", "acct-1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "no usable kubeconfig" not in done.stderr, done.stderr
    assert "cannot reach the API server" in done.stderr
