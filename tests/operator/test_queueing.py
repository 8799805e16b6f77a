"""The work queue: keys once, backoff per key, one shared rate limit, a bounded retry storm."""

from __future__ import annotations

import asyncio
import collections
import time

from controller.cluster import clients, metrics, queueing
from controller.core import catalog as catalog_
from tests.operator.test_reconciling import FakeWriter, reconciler, views_for


def test_a_key_is_queued_once_and_never_worked_on_twice_at_once() -> None:
    running: set[str] = set()
    calls: collections.Counter[str] = collections.Counter()

    async def work(key: str) -> None:
        assert key not in running
        running.add(key)
        calls[key] += 1
        await asyncio.sleep(0.01)
        running.discard(key)

    async def main() -> None:
        q = queueing.WorkQueue(work, workers=4)
        for _ in range(5):
            q.add("a")
        q.add("b")
        await asyncio.sleep(0.001)
        q.add("a")  # while "a" is being worked on: once more, after
        q.add("a")
        await q.drained()
        await q.close()

    asyncio.run(main())
    assert calls == {"a": 2, "b": 1}


def test_failures_back_off_per_key_and_success_forgets() -> None:
    backoff = queueing.Backoff(base=0.5, cap=4.0)
    assert [backoff.when("a") for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.when("b") == 0.5
    backoff.forget("a")
    assert backoff.when("a") == 0.5


def test_the_bucket_admits_a_burst_then_its_rate() -> None:
    bucket = queueing.Bucket(rate=10.0, burst=5)
    waits = [bucket.reserve() for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert [round(w, 2) for w in waits[5:]] == [0.1, 0.2, 0.3]


def test_an_outage_with_1000_accounts_queued_is_no_retry_storm(
    catalog: catalog_.Catalog,
) -> None:
    """The API server is gone (every write fails): count the requests over 6 s.

    Without a shared limit every account would retry after its own delay; with
    the bucket (rate 10/s, burst 100) the retries are bounded by
    burst + rate x seconds, whatever the number of accounts.
    """
    views = views_for(catalog, 1000)
    attempts: list[float] = []

    class Down(FakeWriter):
        async def apply(self, manifest: object) -> None:  # type: ignore[override]
            attempts.append(time.monotonic())
            raise clients.WriteError("connection refused", 0)

    writer = Down(views)
    seconds = 6.0

    async def main() -> None:
        r = reconciler(catalog, views, writer, concurrency=16)
        r.queue.backoff = queueing.Backoff(base=0.5, cap=300.0)
        r.queue.bucket = queueing.Bucket(rate=10.0, burst=100)
        started = time.monotonic()
        for name in views.accounts:
            r.request(name)
        await asyncio.sleep(seconds)
        assert time.monotonic() - started >= seconds
        await r.close()

    asyncio.run(main())
    first_pass = 1000
    retries = len(attempts) - first_pass
    bound = 100 + 10 * seconds
    assert 0 < retries <= bound, (retries, bound)
    # After the burst is spent, the rate is the bucket's.
    late = [t for t in attempts if t - attempts[0] > seconds - 2]
    assert len(late) <= 10 * 2 + 5, len(late)


def test_a_failing_namespace_is_retried_and_counted(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    fails = {"left": 2}

    class Flaky(FakeWriter):
        async def apply(self, manifest: object) -> None:  # type: ignore[override]
            if fails["left"]:
                fails["left"] -= 1
                raise clients.WriteError("503", 503)
            await super().apply(manifest)  # type: ignore[arg-type]

    writer = Flaky(views)
    meter = metrics.Metrics()

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        r.metrics = meter
        r.queue.backoff = queueing.Backoff(base=0.05)
        r.request("acct-0")
        await r.queue.drained()
        await r.close()

    asyncio.run(main())
    assert [m["kind"] for m in writer.applied].count("ConfigMap") == 1
