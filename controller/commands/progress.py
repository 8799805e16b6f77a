"""A progress line on stderr while a long pass works: done/total, rate, ETA.

Only on a terminal: redrawn in place at most ten times a second and erased at
the end. Elsewhere (a log file, CI) nothing is printed while the pass runs;
the pass's one-line summary says what happened.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

_INTERVAL = 0.1  # seconds between redraws
_QUIET = 0.5  # a pass shorter than this shows no line at all (no flicker on small passes)


class Progress:
    def __init__(self, label: str, stream: TextIO | None) -> None:
        self.label = label
        self.stream = stream  # None: stay silent
        self._stage = ""
        self._stage_started = 0.0
        self._drawn = 0.0
        self._width = 0
        self._created = time.monotonic()

    @classmethod
    def for_stderr(cls, label: str) -> Progress:
        stream = sys.stderr
        return cls(label, stream if stream.isatty() else None)

    def update(self, stage: str, done: int, total: int) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self._created < _QUIET:
            return
        if stage != self._stage:
            self._stage, self._stage_started = stage, now
        elif now - self._drawn < _INTERVAL and done < total:
            return
        self._drawn = now
        elapsed = now - self._stage_started
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = f"ETA {(total - done) / rate:.0f}s" if rate else "ETA -"
        line = f"{self.label}: {stage} {done}/{total} ({rate:,.0f}/s, {eta})"
        self._show(line)

    def _show(self, line: str) -> None:
        assert self.stream is not None
        pad = " " * max(0, self._width - len(line))
        self.stream.write(f"\r{line}{pad}")
        self.stream.flush()
        self._width = len(line)

    def __enter__(self) -> Progress:
        return self

    def finish(self) -> None:
        """Erase the line, so that what is printed next starts at the left edge."""
        if self.stream is not None and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()
