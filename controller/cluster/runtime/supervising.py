"""Named root tasks: any that ends while the process runs stops it, as kopf's reactor does.

An operator's long-lived tasks (a watch, the Lease renewal, the workers' feeders)
are meant to run until the process stops. One that returns or raises has left the
operator deaf to part of the cluster while its probes still answer; kopf's
reactor (``_core/reactor/running.py``) names each root task and stops the
operator when any of them exits, and so does this: the task's name and why it
ended are logged once, ``failed`` is set, and ``on_failure`` is called (the host
stops the process, which then exits 1). A cancellation by ``stop`` is not a
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, on_failure: Callable[[], None] = lambda: None) -> None:
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self.failed: str | None = None  # the first root task that ended, and why

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as the root task ``name`` (unique) until ``stop``."""
        if name in self._tasks:
            work.close()
            raise ValueError(f"a root task named {name!r} runs already")
        task = asyncio.create_task(work, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._ended)
        return task

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        why = f"raised {type(error).__name__}: {error}" if error else "returned"
        if self.failed is None:
            self.failed = f"{task.get_name()} {why}"
        log.error(
            "root task %s %s; stopping the operator",
            task.get_name(),
            why,
            exc_info=error,
        )
        self._on_failure()

    async def stop(self) -> None:
        """Cancel every root task and wait for each (in the reverse order of their start)."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in reversed(tasks):
            task.cancel()
        for task in reversed(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
