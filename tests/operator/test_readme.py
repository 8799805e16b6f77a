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

from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

README = support.REPO / "README.md"
SECTION = "## Run it on the local control plane"
# Linked into the scratch clone: what the commands and the Makefile use.
LINKED = ("Makefile", "pyproject.toml", "controller", "schemas", "examples", "deploy", "tests")


def console_block() -> list[tuple[str, list[str]]]:
    """(command, the output lines the README shows for it), in order."""
    text = README.read_text()
    after = text[text.index(SECTION) :]
    block = after[after.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```\n")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


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

    steps = console_block()
    script = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; make cluster-down >/dev/null' EXIT"]
    for i, (command, _) in enumerate(steps):
        script += [f"echo '@@step {i}'", command, f'echo "@@rc {i} $?"']
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

    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current = -1
    for line in done.stdout.splitlines():
        if m := re.fullmatch(r"@@step (\d+)", line):
            current = int(m.group(1))
            outputs[current] = []
        elif m := re.fullmatch(r"@@rc (\d+) (\d+)", line):
            codes[int(m.group(1))] = int(m.group(2))
        else:
            outputs[current].append(line)
    assert sorted(codes) == list(range(len(steps))), context
    for i, (command, shown) in enumerate(steps):
        exits = re.search(r"# exits (\d+)", command)
        assert codes[i] == (int(exits.group(1)) if exits else 0), (command, context)
        print(f"$ {command}", *outputs[i], sep="\n")
        if not shown:
            continue  # the README shows no output for it (make's own lines, a wait)
        if command.startswith("kubectl get accounts"):
            assert _without_age(outputs[i]) == _without_age(shown), context
        else:
            assert outputs[i] == shown, (command, context)
    assert "Traceback" not in done.stderr + log
    assert not (harness_dir / "state").exists()  # make cluster-down stopped it
