"""Named root tasks: one that dies stops the operator; a stop is not a death."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.cluster.runtime import supervising


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("ending", "said"),
    [
        pytest.param("raise", "follow Account objects raised RuntimeError: boom", id="raises"),
        pytest.param("return", "follow Account objects returned", id="returns"),
    ],
)
def test_a_root_task_that_ends_stops_the_operator_once(
    ending: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    stops: list[int] = []

    async def dies() -> None:
        await asyncio.sleep(0.01)
        if ending == "raise":
            raise RuntimeError("boom")

    async def main() -> None:
        s = supervising.Supervisor(on_failure=lambda: stops.append(1))
        keeps = s.start("resync", _forever())
        s.start("follow Account objects", dies())
        await asyncio.sleep(0.1)
        assert s.failed == said
        assert stops == [1]
        assert not keeps.done()  # the others run until the host stops them
        await s.stop()
        assert keeps.cancelled()
        assert stops == [1]  # the stop itself is no second failure

    with caplog.at_level(logging.ERROR, "controller.cluster.runtime.supervising"):
        asyncio.run(main())
    (record,) = caplog.records
    assert record.getMessage() == f"root task {said}; stopping the operator"


def test_a_stop_cancels_every_task_and_is_no_failure() -> None:
    stops: list[int] = []

    async def main() -> None:
        s = supervising.Supervisor(on_failure=lambda: stops.append(1))
        tasks = [s.start(name, _forever()) for name in ("a", "b", "c")]
        assert s.names == ["a", "b", "c"]
        await asyncio.sleep(0.01)
        await s.stop()
        assert all(t.cancelled() for t in tasks)
        assert s.failed is None and s.names == []

    asyncio.run(main())
    assert stops == []


def test_names_are_unique() -> None:
    async def main() -> None:
        s = supervising.Supervisor()
        s.start("resync", _forever())
        work = _forever()
        with pytest.raises(ValueError, match="resync"):
            s.start("resync", work)
        await s.stop()

    asyncio.run(main())


def test_the_first_death_is_the_one_reported() -> None:
    async def dies(after: float, error: str) -> None:
        await asyncio.sleep(after)
        raise ValueError(error)

    async def main() -> None:
        s = supervising.Supervisor()
        s.start("first", dies(0.01, "one"))
        s.start("second", dies(0.05, "two"))
        await asyncio.sleep(0.1)
        assert s.failed == "first raised ValueError: one"
        await s.stop()

    asyncio.run(main())
