"""Breaks of the new CLI surface (README.md "Command line", issue 21's krew flags)."""

from __future__ import annotations

import os
import pathlib
import subprocess

from tests.conftest import CLI, RunCli

TOKEN = "kq7Zt2Lm9Xv4Rb8Nc3Wd6Yf1Hg5Js0Pa"


def test_get_with_a_kubeconfig_that_is_not_yaml_is_one_line_without_the_token(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:115 (`get ACCOUNT [TYPE] [--kubeconfig FILE] ...`: exit 0 / 1), README.md:131
    ("without a traceback"), COMMON rule "never a traceback" and "no run of 8 characters of
    any key [credential] in an error message"; deploy/README.md:421 makes the same promise
    for the operator ("one line naming the file and the problem"), which holds there.
    Broke: ``get acct-1 --kubeconfig FILE`` with a kubeconfig whose token's quote is not
    closed prints a 60-line ``yaml.scanner.ScannerError`` traceback, and PyYAML's snippet
    quotes the token line: ``users: [{name: u, user: {token: "kq7Zt2Lm9Xv4Rb8Nc3...``.
    Fault: controller/commands/views.py ``from_cluster`` catches lightkube's ConfigError but
    not the ``yaml.YAMLError`` that ``KubeConfig.from_file`` raises (the operator's
    controller/cluster/runtime/clients.py turns it into "not YAML at line N")."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\n'
        f'users: [{{name: u, user: {{token: "{TOKEN}}}}}]\n'
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    done = cli("get", "acct-1", "--kubeconfig", kubeconfig, timeout=60)
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert not [TOKEN[i : i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i : i + 8] in out]
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1


def test_get_reads_a_kubeconfig_list_as_kubectl_does(tmp_path: pathlib.Path) -> None:
    """README.md:515-519: "`settings-controller get` reads the cluster of `$KUBECONFIG` ...;
    installed on PATH, `kubectl-integrations` makes the same command a kubectl plugin
    (`kubectl integrations get ...`), which takes kubectl's `--kubeconfig`, `--context` and
    `-n/--namespace`". Broke: ``$KUBECONFIG`` as kubectl documents it, a list of files
    joined by ``:`` (``~/.kube/config:~/.kube/other``, the usual multi-cluster set-up, and
    what kubectl hands its plugins), is taken as one path: ``error: no usable kubeconfig:
    Configuration file /a:/b not found`` while ``kubectl config current-context`` answers.
    The operator does the same (``kubeconfig /a:/b: ... not found``). Fault:
    controller/commands/views.py ``_from_cluster`` calls lightkube's
    ``KubeConfig.from_env()``, which reads ``KUBECONFIG`` as a single file (and
    controller/cluster/runtime/clients.py likewise)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\n'
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    env = {**os.environ, "KUBECONFIG": f"{tmp_path / 'absent'}{os.pathsep}{kubeconfig}"}
    done = subprocess.run(
        [str(CLI), "get", "acct-1"], capture_output=True, text=True, timeout=60, env=env
    )
    # The second file's server is closed: the error must be about reaching it.
    assert "not found" not in done.stderr, done.stderr
    assert "cannot reach the API server" in done.stderr, done.stderr
