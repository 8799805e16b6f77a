"""kopf's "all indexes populated" wait, without its thundering herd at start.

With index handlers, kopf makes every per-object worker wait on one
``ToggleSet`` (an ``asyncio.Condition``) until every object of every indexed
kind has been indexed, and every object's toggle added and dropped meanwhile
calls ``notify_all``. With N objects that is O(N²) wake-ups, each evaluating the
set: measured here, 2,000 accounts (about 6,000 watched objects) took over two
minutes before the first render, and 10,000 would take hours.

``install`` makes ``ToggleSet.wait_for`` share one waiter per (set, state):
only that waiter sleeps on the condition, the others await its result. Same
condition, same predicate, same moment of release; O(1) wake-ups per change.
kopf is pinned (pyproject.toml), and ``install`` refuses a ToggleSet that does
not look like the one this was written against.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from kopf._cogs.aiokits import aiotoggles

_gates: weakref.WeakKeyDictionary[Any, dict[bool, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)
_leaders: set[asyncio.Task[None]] = set()


async def _wait_for(self: Any, state: bool) -> None:
    wanted = bool(state)
    if self.is_on() == wanted:
        return
    gates = _gates.setdefault(self, {})
    gate = gates.get(wanted)
    if gate is None or gate.done():
        gate = asyncio.get_running_loop().create_future()
        gates[wanted] = gate
        leader = asyncio.create_task(_lead(self, wanted, gate))
        _leaders.add(leader)
        leader.add_done_callback(_leaders.discard)
    await asyncio.shield(gate)


async def _lead(toggles: Any, wanted: bool, gate: asyncio.Future[None]) -> None:
    try:
        async with toggles._condition:
            await toggles._condition.wait_for(lambda: toggles.is_on() == wanted)
    except BaseException as e:
        if not gate.done():
            gate.set_exception(e)
        raise
    if not gate.done():
        gate.set_result(None)


def install() -> None:
    """Replace ``ToggleSet.wait_for`` (idempotent)."""
    cls: Any = aiotoggles.ToggleSet
    if cls.wait_for is _wait_for:
        return
    probe = cls(all)
    if not isinstance(getattr(probe, "_condition", None), asyncio.Condition):
        raise RuntimeError("kopf's ToggleSet changed: review controller/cluster/toggles.py")
    cls.wait_for = _wait_for
