"""The operator under a CPU-time sampler, for the profile of a fan-out (``cluster --profile``).

    python -m tests.bench.sampled CONTROL settings-controller-args...

Runs ``settings-controller`` with the given arguments. On SIGUSR1 (or at
once, when CONTROL exists at start) it reads the output path from the file
CONTROL and starts sampling; on SIGUSR2 it stops and
writes there the samples as collapsed stacks (``frame;frame;frame count``, the
format flame-graph tools read) under a summary by function, self and inclusive.

Why not py-spy: it samples wall-clock time and drops only frames it sees idle
(in ``select``), so a thread that is runnable but waiting for a core (the API
server shares both) counts as busy: in a fan-out py-spy put 36 % of the
samples in ``socket.send``, more time than the process had CPU. ``ITIMER_PROF``
fires per 5 ms of the process's own CPU time (user and system): a sample is
5 ms of CPU spent, attributed to the Python frame that spent it (time in C
code or in the kernel, to the frame that called it).
"""

from __future__ import annotations

import collections
import pathlib
import signal
import sys
from types import FrameType

from controller import cli

INTERVAL = 0.005  # seconds of CPU time per sample
TOP = 60


class Sampler:
    def __init__(self, control: pathlib.Path) -> None:
        self.control = control
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.out: pathlib.Path | None = None

    def start(self, signum: int, frame: FrameType | None) -> None:
        self.out = pathlib.Path(self.control.read_text().strip())
        self.stacks.clear()
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)

    def sample(self, signum: int, frame: FrameType | None) -> None:
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{code.co_name} ({_short(code.co_filename)}:{frame.f_lineno})")
            frame = frame.f_back
        self.stacks[tuple(reversed(stack))] += 1

    def stop(self, signum: int, frame: FrameType | None) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        if self.out is None:
            return
        total = sum(self.stacks.values())
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, n in self.stacks.items():
            own[_function(stack[-1])] += n
            for name in {_function(f) for f in stack}:
                inclusive[name] += n
        lines = [f"# {total} samples of {INTERVAL * 1000:.0f} ms CPU: {total * INTERVAL:.2f} s"]
        for title, counts in (("self", own), ("inclusive", inclusive)):
            lines.append(f"# --- {title}")
            lines += [
                f"# {100 * n / max(total, 1):5.1f}% {name}" for name, n in counts.most_common(TOP)
            ]
        lines += [f"{';'.join(stack)} {n}" for stack, n in self.stacks.most_common()]
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.out)
        self.out = None


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.split("/controller/", 1)[-1] if "/controller/" in filename else filename


def _function(frame: str) -> str:
    """``name (file:line)`` without the line: time by function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})"


def main() -> int:
    sampler = Sampler(pathlib.Path(sys.argv[1]))
    signal.signal(signal.SIGPROF, sampler.sample)
    signal.signal(signal.SIGUSR1, sampler.start)
    signal.signal(signal.SIGUSR2, sampler.stop)
    if sampler.control.exists():  # a profile from the first instruction (a cold start)
        sampler.start(signal.SIGUSR1, None)
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
