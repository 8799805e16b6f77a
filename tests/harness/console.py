"""The documentation's ``console`` blocks, as the tests run them: every ``$`` line a command.

``console_block`` reads a block's steps (the command and the output lines shown under it);
``script`` turns commands into lines for one shell, each step's output and exit status
marked; ``printed`` reads that shell's stdout back, step by step.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterable
from typing import NamedTuple

MARK = "@@step"
RC = "@@rc"
_MARKS = re.compile(rf"{MARK} (?P<step>\d+)\n|{RC} (?P<of>\d+) (?P<rc>\d+)\n")


class Step(NamedTuple):
    command: str
    shown: list[str]


def console_block(path: pathlib.Path, section: str) -> list[Step]:
    """The steps of the first ```` ```console```` block after ``section`` in ``path``.

    A here-document (``<<'END'`` up to the line ``END``) is part of its command.
    """
    text = path.read_text()
    after = text[text.index(section) :]
    block = after[after.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```\n")]
    steps: list[Step] = []
    heredoc: str | None = None
    for line in block.splitlines():
        if heredoc is not None:
            steps[-1] = Step(steps[-1].command + "\n" + line, [])
            if line == heredoc:
                heredoc = None
        elif line.startswith("$ "):
            steps.append(Step(line[2:], []))
            if "<<'" in line:
                heredoc = line.split("<<'")[1].split("'")[0]
        else:
            steps[-1].shown.append(line)
    return steps


def script(commands: Iterable[str]) -> list[str]:
    """Shell lines running ``commands`` in turn, each one's output and exit status marked."""
    lines: list[str] = []
    for i, command in enumerate(commands):
        lines += [f"echo '{MARK} {i}'", command, f'echo "{RC} {i} $?"']
    return lines


@dataclasses.dataclass
class Printed:
    """What each step printed (by step number; -1 before the first) and its exit status."""

    outputs: dict[int, list[str]]
    codes: dict[int, int]

    def finished(self, steps: int) -> bool:
        """Whether all ``steps`` ran (each one's exit status was printed)."""
        return sorted(self.codes) == list(range(steps))


def printed(stdout: str) -> Printed:
    """The stdout of a ``script`` shell, by step.

    A marker need not start a line: a command's last line without a newline ends there.
    """
    outputs: dict[int, list[str]] = {-1: []}
    codes: dict[int, int] = {}
    current, at = -1, 0
    for m in _MARKS.finditer(stdout):
        outputs[current] += stdout[at : m.start()].splitlines()
        at = m.end()
        if m["step"] is not None:
            current = int(m["step"])
            outputs[current] = []
        else:
            codes[int(m["of"])] = int(m["rc"])
    outputs[current] += stdout[at:].splitlines()
    return Printed(outputs, codes)
