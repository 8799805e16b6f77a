"""Every change this operator makes to kopf's private internals, each with its reason.

kopf is pinned (pyproject.toml). Each patch checks that what it replaces still
has the shape it was written against and refuses to install otherwise, and
tests/operator/test_kopfpatches.py fails when the pinned kopf changes shape.

1. ``install_shared_index_wait`` — kopf's "all indexes populated" wait without
   its thundering herd. With index handlers, kopf makes every per-object
   worker wait on one ``ToggleSet`` (an ``asyncio.Condition``) until every
   object of every indexed kind has been indexed, and every object's toggle
   added and dropped meanwhile calls ``notify_all``: O(N²) wake-ups. Measured
   here: 2,000 accounts (about 6,000 watched objects) took over two minutes
   before the first render, 10,000 would take hours. The patch makes
   ``ToggleSet.wait_for`` share one waiter per (set, state): same condition,
   same predicate, same moment of release; O(1) wake-ups per change.

2. ``install_lean_watch`` — watch events without ``metadata.managedFields``.
   kopf keeps every listed object's event alive until every object of every
   indexed kind is indexed: at 10,000 accounts, 14,000 bodies at once.
   managedFields are more than half of each (an Account: 8.5 KiB parsed,
   5 KiB of it managedFields) and nothing here reads them. Measured at 10,000
   accounts: operator RSS after a restart 391 MiB -> 339 MiB.

3. ``install_safe_json`` — a body too deeply nested for Python's JSON decoder
   must not stop the operator. An IntegrationSettings whose overrides nest
   ~1,200 levels (7 KB, stored by a tenant on a cluster without the admission
   policy) made kopf's list and watch raise ``RecursionError``: the operator
   exited, and crash-looped on the same list at every restart, serving no
   account. kopf's JSON decoding of lists (``api.get``) and watch streams
   (``api.stream``) now falls back, on ``RecursionError`` only, to replacing
   every subtree deeper than ``FLATTEN_DEPTH`` with a marker string; the core
   then refuses that one object by name (``validation.too_deep``) and every
   other account is served. The lean watch (2.) also cuts every body at
   ``KOPF_DEPTH``: kopf deep-copies each body it processes, and a body 600
   levels deep, which decodes, made kopf throttle that object's worker with
   RecursionError forever instead of reporting it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import types
import weakref
from collections.abc import AsyncIterator
from typing import Any

from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching


def install() -> None:
    """All of them (idempotent)."""
    install_shared_index_wait()
    install_lean_watch()
    install_safe_json()


# --- 1. one waiter for kopf's index-readiness toggles ----------------------------

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


def install_shared_index_wait() -> None:
    """Replace ``ToggleSet.wait_for`` (idempotent)."""
    cls: Any = aiotoggles.ToggleSet
    if cls.wait_for is _wait_for:
        return
    probe = cls(all)
    if not isinstance(getattr(probe, "_condition", None), asyncio.Condition):
        raise RuntimeError("kopf's ToggleSet changed: review controller/cluster/kopfpatches.py")
    cls.wait_for = _wait_for


# --- 2. watch events without managedFields -----------------------------------------

_original: Any = None


async def _lean_watch(**kwargs: Any) -> AsyncIterator[Any]:
    async for event in _original(**kwargs):
        if isinstance(event, dict):
            strip(event)
        yield event


def strip(event: dict[str, Any]) -> None:
    """Drop the object's managedFields from a raw watch event, in place; cut what is
    nested deeper than ``KOPF_DEPTH`` (see patch 3)."""
    body = event.get("object")
    if isinstance(body, dict):
        meta = body.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        truncate(body, KOPF_DEPTH)


def install_lean_watch() -> None:
    """Wrap ``kopf._cogs.clients.watching.infinite_watch`` (idempotent)."""
    global _original
    if watching.infinite_watch is _lean_watch:
        return
    if not inspect.isasyncgenfunction(watching.infinite_watch):
        raise RuntimeError(
            "kopf's infinite_watch changed: review controller/cluster/kopfpatches.py"
        )
    _original = watching.infinite_watch
    watching.infinite_watch = _lean_watch


# --- 3. JSON too deep for the decoder ----------------------------------------------

FLATTEN_DEPTH = 64  # deeper than any valid declaration (validation.MAX_DEPTH is 32)
# kopf deep-copies every body it processes (its diff-base essence, even for
# on.event handlers): a body 600 levels deep decodes, then throttles its
# worker with RecursionError forever. The lean watch cuts bodies to this depth.
KOPF_DEPTH = 48
MARKER = "<nested too deeply>"


def truncate(body: dict[str, Any], limit: int) -> None:
    """Replace, in place, every container deeper than ``limit`` with ``MARKER``. Iterative."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if isinstance(value, dict | list):
                if depth >= limit:
                    node[key] = MARKER
                else:
                    stack.append((value, depth + 1))


def loads(text: str | bytes) -> Any:
    """``json.loads``, but a document too deeply nested loses its deepest parts instead
    of raising ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(flatten(raw, FLATTEN_DEPTH))


def flatten(text: str, limit: int) -> str:
    """``text`` (JSON) with every object or array deeper than ``limit`` replaced by ``MARKER``."""
    out: list[str] = []
    depth = 0
    skip_from = -1  # depth at which a skipped subtree started
    in_string = escaped = False
    start = 0  # start of the run of characters to keep
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit and skip_from < 0:
                out.append(text[start:i])
                out.append(json.dumps(MARKER))
                skip_from = depth
        elif ch in "}]":
            if skip_from == depth:
                skip_from = -1
                start = i + 1
            depth -= 1
    if skip_from < 0:
        out.append(text[start:])
    return "".join(out)


async def _get(url: str, **kwargs: Any) -> Any:
    response = await api.request(method="get", url=url, **kwargs)
    async with response:
        return loads(await response.read())


_original_get: Any = None


def install_safe_json() -> None:
    """Decode kopf's lists and watch events with ``loads`` (idempotent)."""
    global _original_get
    if api.get is _get:
        return
    if not inspect.iscoroutinefunction(api.get) or getattr(api, "json", None) is not json:
        raise RuntimeError("kopf's api module changed: review controller/cluster/kopfpatches.py")
    # api.stream calls ``json.loads`` through the module's ``json`` name.
    setattr(api, "json", types.SimpleNamespace(loads=loads, dumps=json.dumps))  # noqa: B010
    _original_get = api.get
    api.get = _get
