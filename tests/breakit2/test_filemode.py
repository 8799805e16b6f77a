"""Breaks of file mode's promises (README.md "Command line") by a first-time user's layout."""

from __future__ import annotations

import pathlib

from tests.conftest import RunCli


def test_an_output_directory_inside_the_declarations_is_not_read_back(
    cli: RunCli, declarations: pathlib.Path
) -> None:
    """README.md:111 (`reconcile`: "0 no errors") and :98 (rule 8: "Same declarations,
    byte-identical outputs"); README.md:27 (file mode reads "a directory of YAML
    declarations" and writes "OUT/<namespace>/integration-settings.yaml (a ConfigMap
    manifest)"). Broke: with OUT inside DIR (``reconcile repo --output-dir repo/out``, the
    natural layout of a checkout, or ``watch . --output-dir out``) the first pass exits 0 and
    every later pass reads its own ConfigMap manifests back as declarations: five
    ``repo/out/acct-*/integration-settings.yaml:2: error: ConfigMap ...: unknown kind``
    errors and exit 1 on unchanged declarations; ``watch`` reports the same five errors on
    the rescan its own writes trigger. Fault: controller/files/loading.py ``discover`` (does
    not leave out OUT, nor a directory holding ``.settings-controller``) or the commands'
    argument checks (refuse OUT inside DIR)."""
    out = declarations / "out"
    first = cli("reconcile", declarations, "--output-dir", out)
    assert first.returncode == 0, first.stderr
    second = cli("reconcile", declarations, "--output-dir", out)
    assert "unknown kind 'ConfigMap'" not in second.stderr
    assert second.returncode == 0, second.stderr
