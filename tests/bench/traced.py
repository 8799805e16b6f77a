"""The operator under ``tracemalloc``, for the heap breakdown (``cluster --heap``).

    python -X tracemalloc=1 -m tests.bench.traced OUT settings-controller-args...

Runs ``settings-controller`` with the given arguments; on SIGUSR2 writes what
is allocated and still live, by source line and by file, to OUT (JSON). The
tracing roughly doubles the operator's CPU: numbers from a ``--heap`` run are
for the breakdown only.
"""

from __future__ import annotations

import gc
import json
import pathlib
import signal
import sys
import tracemalloc
from types import FrameType

from controller import cli

TOP = 25


def dump(out: pathlib.Path) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    total = sum(s.size for s in snapshot.statistics("filename"))

    def top(key: str) -> list[dict[str, object]]:
        return [
            {"where": str(s.traceback), "kib": round(s.size / 1024), "blocks": s.count}
            for s in snapshot.statistics(key)[:TOP]
        ]

    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {"total_kib": round(total / 1024), "lines": top("lineno"), "files": top("filename")}
        )
    )
    tmp.replace(out)


def main() -> int:
    out = pathlib.Path(sys.argv[1])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out)

    if not tracemalloc.is_tracing():
        tracemalloc.start()
    signal.signal(signal.SIGUSR2, on_signal)
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
