"""A work queue in the style of client-go's ``workqueue``: keys, not events.

Whoever notices a change only names the key (an account namespace) that needs
work; the queue owns everything else. A key waiting is queued once however
often it is named; a key being worked on and named again runs once more after
(never twice at once). A failed key comes back after a per-key exponential
backoff (``forget`` on success starts it over), and every retry also waits for
a token from one bucket shared by all keys, so an API server outage with
10,000 accounts queued costs at most ``rate`` retries a second, not a storm.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Backoff:
    """Per-key exponential delays: ``base * 2**failures``, at most ``cap``."""

    def __init__(self, base: float = 0.5, cap: float = 300.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self.cap, self.base * 2**failures))

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float = 10.0, burst: int = 100) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def reserve(self) -> float:
        """Take a token; how long to wait before using it."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class WorkQueue:
    """De-duplicated keys worked on by ``workers`` tasks calling ``work(key)``."""

    def __init__(
        self,
        work: Callable[[str], Awaitable[None]],
        workers: int = 16,
        backoff: Backoff | None = None,
        bucket: Bucket | None = None,
        on_retry: Callable[[str, float], None] = lambda key, delay: None,
    ) -> None:
        self._work = work
        self._workers_wanted = workers
        self.backoff = backoff or Backoff()
        self.bucket = bucket or Bucket()
        self._on_retry = on_retry
        self._queue: collections.OrderedDict[str, float] = collections.OrderedDict()  # key -> since
        self._processing: set[str] = set()
        self._dirty: dict[str, float] = {}  # named again while processing
        self._waiting: dict[str, asyncio.TimerHandle] = {}  # retries not due yet
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued, in progress or waiting
        self._idle.set()
        self._settled = asyncio.Event()  # nothing queued or in progress
        self._settled.set()
        self._workers: list[asyncio.Task[None]] = []

    # --- what callers see --------------------------------------------------------

    def add(self, key: str) -> None:
        """Work on ``key`` soon: once, however often it is added before a worker takes it."""
        if key in self._processing:
            self._dirty.setdefault(key, time.monotonic())
            return
        if key in self._queue:
            return
        self._queue[key] = time.monotonic()
        self._idle.clear()
        self._settled.clear()
        self._wakeup.set()
        if not self._workers:
            self._workers = [asyncio.create_task(self._run()) for _ in range(self._workers_wanted)]

    def add_rate_limited(self, key: str) -> None:
        """Work on ``key`` again after its backoff and a token from the shared bucket."""
        delay = max(self.backoff.when(key), self.bucket.reserve())
        self._on_retry(key, delay)
        self.add_after(key, delay)

    def add_after(self, key: str, delay: float) -> None:
        if key in self._waiting:
            return  # one retry per key at a time
        self._idle.clear()

        def due() -> None:
            del self._waiting[key]
            self.add(key)
            self._settle()

        self._waiting[key] = asyncio.get_running_loop().call_later(delay, due)

    def forget(self, key: str) -> None:
        """``key`` succeeded: its next failure starts the backoff over."""
        self.backoff.forget(key)

    async def drained(self) -> None:
        """Until nothing is queued, in progress or waiting for a retry."""
        await self._idle.wait()

    async def settled(self) -> None:
        """Until nothing is queued or in progress (retries may still wait)."""
        await self._settled.wait()

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._dirty)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def oldest(self) -> float:
        """Seconds the longest-queued key has waited (0 when none waits)."""
        since = [*self._queue.values(), *self._dirty.values()]
        return time.monotonic() - min(since) if since else 0.0

    async def close(self) -> None:
        for handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # --- workers -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            key, _ = self._queue.popitem(last=False)
            self._processing.add(key)
            try:
                await self._work(key)
            except Exception:  # a worker outlives any one key
                log.exception("%s: failed; retrying after a backoff", key)
                self.add_rate_limited(key)
            else:
                self.forget(key)
            finally:
                self._processing.discard(key)
                if self._dirty.pop(key, None) is not None:
                    self.add(key)
                self._settle()

    def _settle(self) -> None:
        if not self._queue and not self._processing:
            self._settled.set()
            if not self._waiting:
                self._idle.set()
