"""The README's gateway walk-through, every ``$`` line as written, in one shell.

It runs in a network namespace of its own (``unshare --net``: the README's port 8080 is
then free whatever else runs on this machine), with the provider simulator started in it,
a copy of examples/ whose global points at the simulator, and ``$OPENAI_API_KEY`` set to a
made-up key. Every output line the README shows must be printed by its command.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import yaml

from tests.conftest import EXAMPLES
from tests.harness import console
from tests.providers import simulator

REPO = pathlib.Path(__file__).resolve().parents[2]
SECTION = "## Gateway: the OpenAI SDK without a key"
KEY = "sk-proj-readmeDemoKey0123456789AbCdEfGhIjKl"


def test_readme_gateway_walkthrough(tmp_path: pathlib.Path) -> None:
    steps = console.console_block(REPO / "README.md", SECTION)
    assert any("settings-controller gateway" in command for command, _ in steps)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(EXAMPLES, work / "examples")
    bin_dir = pathlib.Path(sys.executable).parent
    script = [
        "set -e",
        "ip link set lo up",
        f"cd {shlex.quote(str(REPO))}",
        # Not a job of this shell: the README's `kill %1` is the gateway's.
        f"( {shlex.quote(sys.executable)} -m tests.providers.simulator > {tmp_path}/sim.out 2>&1 &"
        f" echo $! > {tmp_path}/sim.pid )",
        f"until grep -q '^CA:' {tmp_path}/sim.out; do sleep 0.1; done",
        f"export OPENAI_URL=$(sed -n 's/^OpenAI: *//p' {tmp_path}/sim.out)",
        f"export SSL_CERT_FILE=$(sed -n 's/^CA: *//p' {tmp_path}/sim.out)",
        f"{shlex.quote(sys.executable)} - <<'PATCH'\n"
        "import os, yaml\n"
        f"path = {str(work / 'examples' / 'global.yaml')!r}\n"
        "body = yaml.safe_load(open(path))\n"
        "for block in body['spec']['integrations'].values():\n"
        "    for ref in block['credentials'].values():\n"
        "        ref['endpoint'] = os.environ['OPENAI_URL']\n"
        "open(path, 'w').write(yaml.safe_dump(body))\n"
        "PATCH",
        f"export PATH={shlex.quote(str(bin_dir))}:$PATH",
        f"export OPENAI_API_KEY={KEY}",
        f"cd {shlex.quote(str(work))}",
        "set +e",
    ]
    script += console.script(command for command, _ in steps)
    script += ["wait", f"kill $(cat {tmp_path}/sim.pid)", "true"]
    done = subprocess.run(
        ["unshare", "--net", "bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    out = done.stdout
    printed = console.printed(out)
    assert printed.finished(len(steps)), done.stderr[-3000:]
    for i, (command, expected) in enumerate(steps):
        for line in expected:
            assert line in printed.outputs[i], (command, printed.outputs[i], done.stderr[-2000:])
    python_step = next(i for i, (c, _) in enumerate(steps) if c.startswith("python3"))
    assert printed.outputs[python_step] == [
        "Hello from the simulator.",
        "['gpt-4o', 'gpt-4o-mini', 'gpt-4.1']",
    ], done.stderr[-2000:]
    assert simulator.leaked(out + done.stderr, [KEY]) == []
    assert yaml.safe_load((work / "tokens.yaml").read_text())["tok-demo-123"] == "acct-123"
