"""The operator's own list and watch of generated objects, on the real API server.

As the operator's ServiceAccount (deploy/rbac grants list/watch on these names
only), with its token given in the kubeconfig and handed out by an exec
plugin: the one HTTP path serves both.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

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


def exec_kubeconfig(kube: Kube, tmp_path: pathlib.Path) -> pathlib.Path:
    """The operator's kubeconfig, its token handed out by an exec plugin instead."""
    config = yaml.safe_load(kube.operator_kubeconfig.read_text())
    user = config["users"][0]["user"]
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": user.pop("token")},
    }
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(0o700)
    user["exec"] = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": str(plugin),
        "interactiveMode": "Never",
    }
    path = tmp_path / "kubeconfig-exec"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("credentials", ["token", "exec-plugin"])
def test_generated_objects_are_listed_and_watched_as_the_operator(
    installed: Kube, namespace: str, credentials: str, tmp_path: pathlib.Path
) -> None:
    kube = installed
    kube.kubectl("apply", "--server-side", "-f", "-", input=_configmap(namespace, "one"))
    kubeconfig = (
        kube.operator_kubeconfig if credentials == "token" else exec_kubeconfig(kube, tmp_path)
    )

    async def main() -> None:
        client = clients.Client.connect(kubeconfig)
        try:
            listed, version = await client.list_named(
                "ConfigMap", rendering.CONFIGMAP_NAME, bodies.digest
            )
            mine = [o for o in listed if o.namespace == namespace]
            assert len(mine) == 1
            assert mine[0].content_hash == rendering.content_hash({"k": "one"})
            assert version

            seen: asyncio.Queue[tuple[str, bodies.Digest]] = asyncio.Queue()

            async def watch() -> None:
                async for type_, body in client.watch_named(
                    "ConfigMap", rendering.CONFIGMAP_NAME, version
                ):
                    if type_ != "BOOKMARK":
                        await seen.put((type_, bodies.digest(body)))

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

    client = clients.Client(Session())  # type: ignore[arg-type]

    async def main() -> None:
        events = []
        with pytest.raises(clients.ReadError) as raised:
            async for event in client.watch_named("ConfigMap", rendering.CONFIGMAP_NAME, "5"):
                events.append(event[0])
        assert events == ["MODIFIED"]
        assert raised.value.status == 410

    asyncio.run(main())
