"""The README's "Run it on the local control plane": every ``$`` line, in order, in one shell.

It runs in a scratch directory that looks like a clone (symlinks to this tree) with its own
``KUBE_HARNESS_DIR``, so its ``make cluster-up`` / ``make cluster-down`` start and stop a
second control plane, not the test session's. The binary is copied in first, so the
``go build`` of ``make cluster-up`` finds it up to date.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from tests.harness import console
from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

README = support.REPO / "README.md"
SECTION = "## Run it on the local control plane"
# Linked into the scratch clone: what the commands and the Makefile use.
LINKED = ("Makefile", "pyproject.toml", "controller", "schemas", "examples", "deploy", "tests")


def _without_age(lines: list[str]) -> list[str]:
    return [re.sub(r"\s+\S+$", "", line) for line in lines]


def test_readme_local_control_plane(kube: Kube, tmp_path: pathlib.Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in LINKED:
        (clone / name).symlink_to(support.REPO / name)
    (clone / ".venv").symlink_to(support.REPO / ".venv")
    harness_dir = clone / ".cluster"
    (harness_dir / "bin").mkdir(parents=True)
    built = pathlib.Path(os.path.realpath(kube.kubectl_path))
    shutil.copy2(built, harness_dir / "bin" / built.name)

    steps = console.console_block(README, SECTION)
    script = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; make cluster-down >/dev/null' EXIT"]
    script += console.script(command for command, _ in steps)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VIRTUAL_ENV")}
    env["KUBE_HARNESS_DIR"] = str(harness_dir)
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (clone / "operator.log").read_text() if (clone / "operator.log").exists() else ""
    context = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}\noperator:\n{log[-3000:]}"

    run = console.printed(done.stdout)
    assert run.finished(len(steps)), context
    for i, (command, shown) in enumerate(steps):
        exits = re.search(r"# exits (\d+)", command)
        assert run.codes[i] == (int(exits.group(1)) if exits else 0), (command, context)
        print(f"$ {command}", *run.outputs[i], sep="\n")
        if not shown:
            continue  # the README shows no output for it (make's own lines, a wait)
        if command.startswith("kubectl get accounts"):
            assert _without_age(run.outputs[i]) == _without_age(shown), context
        else:
            assert run.outputs[i] == shown, (command, context)
    assert "Traceback" not in done.stderr + log
    assert not (harness_dir / "state").exists()  # make cluster-down stopped it
