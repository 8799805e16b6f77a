"""The watchers of the fair baseline: a process that watches the baseline's ConfigMaps.

    python -m tests.bench.sink KUBECONFIG NAME [drain]

Each fan-out write is delivered to two watches: the operator's (it follows
every generated ConfigMap, which drift repair needs) and the benchmark's
observer (which times completion). The baseline's writes get the same two,
on ConfigMaps named NAME across all namespaces, from this separate process
(as the operator is one): one watch decodes every event and its
``openai.json`` as the observer does; the other decodes each event line and
drops it, standing in for the operator's watch (what the operator does with
an event beyond that is its own work, counted against it). Both resume from
the last version seen, so no relisting burst falls inside a measurement.
Runs until killed. With ``drain``, only the second watch: the like-for-like limit
writes the ``integration-settings`` ConfigMaps themselves, whose decoding watch is the
benchmark's observer, so this stands in for the operator's watch alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import sys
from typing import Any

import aiohttp

from tests.bench import kube


async def decode(session: aiohttp.ClientSession, name: str) -> None:
    async for _, obj in kube.watch(session, "/api/v1/configmaps", selector(name)):
        data = obj.get("data") or {}
        with contextlib.suppress(ValueError):
            json.loads(data.get("openai.json", "{}"))


async def drain(session: aiohttp.ClientSession, name: str) -> None:
    async for _ in kube.watch(session, "/api/v1/configmaps", selector(name)):
        pass


def selector(name: str) -> dict[str, str]:
    return {"fieldSelector": f"metadata.name={name}"}


async def main(kubeconfig: pathlib.Path, name: str, drain_only: bool = False) -> None:
    info: Any = type("Info", (), {"kubeconfig": kubeconfig})
    async with kube.raw_session(info) as session:
        if drain_only:
            await drain(session, name)
        else:
            await asyncio.gather(decode(session, name), drain(session, name))


if __name__ == "__main__":
    asyncio.run(main(pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:] == ["drain"]))
