"""The operator's own list and watch of generated objects, on the real API server.

As the operator's ServiceAccount (deploy/rbac grants list/watch on these names
only), with its token given in the kubeconfig and handed out by an exec
plugin: the one HTTP path serves both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from controller.cluster.runtime import clients, following, records, secrets
from controller.core import rendering
from tests.harness.fixtures import Kube


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
                "ConfigMap", rendering.CONFIGMAP_NAME, records.digest
            )
            mine = [o for o in listed if o.namespace == namespace]
            assert len(mine) == 1
            assert mine[0].content_hash == rendering.content_hash({"k": "one"})
            assert version

            seen: asyncio.Queue[tuple[str, records.Digest]] = asyncio.Queue()

            async def watch() -> None:
                async for type_, body in client.watch_named(
                    "ConfigMap", rendering.CONFIGMAP_NAME, version
                ):
                    if type_ != "BOOKMARK":
                        await seen.put((type_, records.digest(body)))

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


def test_one_secret_is_followed_by_name_and_no_other(kube: Kube, namespace: str) -> None:
    """``following.secrets_in(..., name=)``: a field selector on the list and the watch, so
    another Secret in the namespace (one whose name starts with the same word included)
    is never held and its changes never reported; the watched one deleted and created
    again is reported each time."""

    def secret(name: str, value: str) -> None:
        kube.kubectl(
            "create", "secret", "generic", name, "-n", namespace, f"--from-literal=k={value}"
        )

    def patch(name: str, value: str) -> None:
        data = json.dumps({"data": {"k": base64.b64encode(value.encode()).decode()}})
        kube.kubectl("patch", "secret", name, "-n", namespace, "--type=merge", "-p", data)

    for name in ("watched", "watched-2", "other"):
        secret(name, f"{name}-1")

    async def main() -> None:
        client = clients.Client.connect(kube.kubeconfig)
        store = secrets.SecretStore()
        reported: asyncio.Queue[frozenset[str]] = asyncio.Queue()

        async def changed(names: frozenset[str]) -> None:
            await reported.put(names)

        task = asyncio.create_task(
            following.secrets_in(client, namespace, store, changed, name="watched")
        )
        try:
            await asyncio.wait_for(store.ready.wait(), 15)
            assert await asyncio.wait_for(reported.get(), 5) == {"watched"}  # the listing
            assert len(store) == 1
            assert store.value("watched", "k") == base64.b64encode(b"watched-1").decode()
            assert store.value("other", "k") is None and store.value("watched-2", "k") is None

            async def next_change() -> frozenset[str]:
                return await asyncio.wait_for(reported.get(), 15)

            # The others change (several times), then the watched one: the watch delivers
            # in order, so the first change reported must be the watched one's.
            for i in range(3):
                await asyncio.to_thread(patch, "other", f"other-{i + 2}")
                await asyncio.to_thread(patch, "watched-2", f"w2-{i + 2}")
            await asyncio.to_thread(patch, "watched", "watched-2")
            assert await next_change() == {"watched"}
            assert store.value("watched", "k") == base64.b64encode(b"watched-2").decode()
            assert reported.empty() and len(store) == 1

            await asyncio.to_thread(
                kube.kubectl, "delete", "secret", "watched", "-n", namespace, "--wait=true"
            )
            assert await next_change() == {"watched"}
            assert store.value("watched", "k") is None and len(store) == 0
            await asyncio.to_thread(secret, "watched", "watched-3")
            assert await next_change() == {"watched"}
            assert store.value("watched", "k") == base64.b64encode(b"watched-3").decode()
            # Another deleted and created again: still nothing.
            await asyncio.to_thread(kube.kubectl, "delete", "secret", "other", "-n", namespace)
            await asyncio.to_thread(secret, "other", "other-9")
            await asyncio.to_thread(patch, "watched", "watched-4")
            assert await next_change() == {"watched"}
            assert reported.empty() and len(store) == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

    asyncio.run(main())
