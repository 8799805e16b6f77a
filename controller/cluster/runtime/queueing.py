"""A work queue in the style of client-go's ``workqueue``: keys, not events.

Whoever notices a change only names the key (an account namespace) that needs
work; the queue owns everything else. A key waiting is queued once however
often it is named; a key being worked on and named again runs once more after
(never twice at once).

``work(key)`` is controller-runtime's ``Reconcile``: it returns a ``Result``
(or None, the same as ``Result()``) or raises, and the queue does the rest,
as ``reconcileHandler`` does: an error comes back after a per-key exponential
backoff and a token from one bucket shared by all keys (an API server outage
with 10,000 accounts queued costs at most ``rate`` retries a second, not a
storm); ``Result(requeue_after=s)`` forgets the key's failures and adds it
again in ``s`` seconds (periodic work is a requeue, not a private timer);
``Result(requeue=True)`` adds it rate-limited; success forgets its failures.
The queue counts each outcome (``controller_runtime_reconcile_total{result}``,
``..._errors_total``) through its ``Meter``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Result:
    """What one ``work(key)`` asks of the queue (controller-runtime's ``reconcile.Result``)."""

    requeue_after: float | None = None  # seconds: work on the key again then
    requeue: bool = False  # work on it again after its backoff


DONE = Result()


class _Count(Protocol):
    def inc(self) -> None: ...


class _Observe(Protocol):
    def observe(self, amount: float) -> None: ...


class Meter(Protocol):
    """The series one queue reports (``metrics.QueueMeter``: client-go's ``workqueue_*``
    and controller-runtime's ``controller_runtime_*``)."""

    @property
    def adds(self) -> _Count: ...

    @property
    def retries(self) -> _Count: ...

    @property
    def latency(self) -> _Observe: ...

    def reconciled(self, result: str, seconds: float) -> None:
        """One ``work`` ended: ``success``, ``error``, ``requeue`` or ``requeue_after``."""
        ...

    def follow(
        self, depth: Callable[[], int], started: Callable[[], Collection[float]]
    ) -> None: ...


class Backoff(Generic[K]):
    """Per-key exponential delays: ``base * 2**failures``, at most ``cap``."""

    def __init__(self, base: float = 0.5, cap: float = 300.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self.cap, self.base * 2**failures))

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
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


class WorkQueue(Generic[K]):
    """De-duplicated keys worked on by ``workers`` tasks calling ``work(key)``."""

    def __init__(
        self,
        work: Callable[[K], Awaitable[Result | None]],
        workers: int = 16,
        backoff: Backoff[K] | None = None,
        bucket: Bucket | None = None,
        on_retry: Callable[[K, float], None] = lambda key, delay: None,
        meter: Meter | None = None,
        autostart: bool = True,
    ) -> None:
        self._work = work
        # controller-runtime's series of this queue (adds, latency, work time, results).
        self._meter = meter
        self._workers_wanted = workers
        self.backoff: Backoff[K] = backoff if backoff is not None else Backoff()
        self.bucket = bucket if bucket is not None else Bucket()
        self._on_retry = on_retry
        self._queue: collections.OrderedDict[K, float] = collections.OrderedDict()  # key -> since
        self._processing: dict[K, float] = {}  # key -> when its work started
        self._dirty: dict[K, float] = {}  # named again while processing
        self._waiting: dict[K, asyncio.TimerHandle] = {}  # requeues not due yet
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued, in progress or waiting
        self._idle.set()
        self._settled = asyncio.Event()  # nothing queued or in progress
        self._settled.set()
        self._workers: list[asyncio.Task[None]] = []
        # False: keys wait until ``start`` (controller-runtime starts its workers only
        # once every cache is synced); True: the first ``add`` starts them.
        self._started = autostart
        if meter is not None:
            meter.follow(lambda: self.depth, lambda: list(self._processing.values()))

    # --- what callers see --------------------------------------------------------

    def add(self, key: K) -> None:
        """Work on ``key`` soon: once, however often it is added before a worker takes it
        (a requeue or retry it waited for is dropped: the work it asked for happens now)."""
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting.cancel()
        if key in self._processing:
            self._dirty.setdefault(key, time.monotonic())
            return
        if key in self._queue:
            return
        if self._meter is not None:
            self._meter.adds.inc()
        self._queue[key] = time.monotonic()
        self._idle.clear()
        self._settled.clear()
        self._wakeup.set()
        if self._started and not self._workers:
            self.start()

    def start(self) -> None:
        """Start the workers (once); what was added meanwhile is worked on now."""
        self._started = True
        if not self._workers:
            self._workers = [asyncio.create_task(self._run()) for _ in range(self._workers_wanted)]

    def add_rate_limited(self, key: K) -> None:
        """Work on ``key`` again after its backoff and a token from the shared bucket."""
        delay = max(self.backoff.when(key), self.bucket.reserve())
        self._on_retry(key, delay)
        if self._meter is not None:
            self._meter.retries.inc()
        self.add_after(key, delay)

    def add_after(self, key: K, delay: float) -> None:
        """Work on ``key`` in ``delay`` seconds; one wait per key, the earliest asked."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(key)
        if waiting is not None:
            if waiting.when() <= loop.time() + delay:
                return
            waiting.cancel()
        self._idle.clear()

        def due() -> None:
            del self._waiting[key]
            self.add(key)
            self._settle()

        self._waiting[key] = loop.call_later(delay, due)

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the backoff over."""
        self.backoff.forget(key)

    async def drained(self) -> None:
        """Until nothing is queued, in progress or waiting for a retry."""
        await self._idle.wait()

    async def settled(self) -> None:
        """Until nothing is queued or in progress (retries may still wait)."""
        await self._settled.wait()

    @property
    def pending(self) -> list[K]:
        """The keys waiting for a worker, oldest first (not those in progress or waiting
        for a requeue)."""
        return list(self._queue)

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
            key, queued = self._queue.popitem(last=False)
            started = self._processing[key] = time.monotonic()
            if self._meter is not None:
                self._meter.latency.observe(started - queued)
            result = "error"
            try:
                asked = await self._work(key) or DONE
            except Exception:  # a worker outlives any one key
                log.exception("%s: failed; retrying after a backoff", key)
                self.add_rate_limited(key)
            else:
                result = self._requeue(key, asked)
            finally:
                self._processing.pop(key, None)
                if self._meter is not None and not _cancelled():
                    self._meter.reconciled(result, time.monotonic() - started)
                if self._dirty.pop(key, None) is not None:
                    self.add(key)
                self._settle()

    def _requeue(self, key: K, asked: Result) -> str:
        """What controller-runtime's ``reconcileHandler`` does with a result; its label."""
        if asked.requeue_after is not None and asked.requeue_after > 0:
            self.forget(key)
            self.add_after(key, asked.requeue_after)
            return "requeue_after"
        if asked.requeue:
            self.add_rate_limited(key)
            return "requeue"
        self.forget(key)
        return "success"

    def _settle(self) -> None:
        if not self._queue and not self._processing:
            self._settled.set()
            if not self._waiting:
                self._idle.set()


def _cancelled() -> bool:
    """Whether the running task is being cancelled (a stop, not a reconcile's result)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
