"""The operator's own list and watch of generated objects, on the real API server.

As the operator's ServiceAccount (deploy/rbac grants list/watch on these names
only), through both read paths: the raw aiohttp session and lightkube, which
serves kubeconfigs the raw session cannot (exec plugins, auth providers).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.cluster import bodies, clients
from controller.core import rendering
from tests.cluster.fixtures import Kube


def _configmap(namespace: str, value: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": rendering.CONFIGMAP_NAME, "namespace": namespace},
            "data": {"k": value},
        }
    )


@pytest.mark.parametrize("path", ["raw", "lightkube"])
def test_generated_objects_are_listed_and_watched_as_the_operator(
    installed: Kube, namespace: str, path: str
) -> None:
    kube = installed
    kube.kubectl("apply", "--server-side", "-f", "-", input=_configmap(namespace, "one"))

    async def main() -> None:
        client = clients.Client.connect(kube.operator_kubeconfig)
        if path == "lightkube":
            client._session = None  # the path an exec-plugin kubeconfig takes
        try:
            listed, version = await client.list_named(
                "ConfigMap", rendering.CONFIGMAP_NAME, bodies.output
            )
            mine = [o for o in listed if o.namespace == namespace]
            assert len(mine) == 1
            assert mine[0].content_hash == rendering.content_hash({"k": "one"})
            assert version

            seen: asyncio.Queue[tuple[str, bodies.Output]] = asyncio.Queue()

            async def watch() -> None:
                async for type_, body in client.watch_named(
                    "ConfigMap", rendering.CONFIGMAP_NAME, version
                ):
                    if type_ != "BOOKMARK":
                        await seen.put((type_, bodies.output(body)))

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.5)
            await asyncio.to_thread(
                kube.kubectl,
                "apply",
                "--server-side",
                "-f",
                "-",
                input=_configmap(namespace, "two"),
            )
            while True:
                type_, output = await asyncio.wait_for(seen.get(), 15)
                if output.namespace == namespace:
                    break
            assert type_ == "MODIFIED"
            assert output.content_hash == rendering.content_hash({"k": "two"})
            task.cancel()
        finally:
            await client.close()

    asyncio.run(main())


def test_an_error_event_ends_the_watch_with_its_code() -> None:
    """The server says a version is too old with an ERROR event in a 200 stream: list again."""

    class Session:
        async def watch(self, path: str, params: Any, timeout: float) -> AsyncIterator[Any]:
            yield {"type": "MODIFIED", "object": {"metadata": {"namespace": "a"}}}
            yield {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}

    client = clients.Client(None, Session())  # type: ignore[arg-type]

    async def main() -> None:
        events = []
        with pytest.raises(clients.ReadError) as raised:
            async for event in client.watch_named("ConfigMap", rendering.CONFIGMAP_NAME, "5"):
                events.append(event[0])
        assert events == ["MODIFIED"]
        assert raised.value.status == 410

    asyncio.run(main())
