"""The one module that talks to the API server for writes.

kopf watches; it has no write client. Everything the operator writes goes
through ``Client``: server-side applies, status patches and Events over a raw
aiohttp session (``sessions``: a quarter of lightkube's client CPU per write,
measured by tests/bench), lightkube for the platform key Secrets' list and
watch and for kubeconfigs the raw session cannot serve.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import pathlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig, operators
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources import coordination_v1, core_v1
from lightkube.types import PatchType

from controller.cluster import sessions
from controller.core import catalog

log = logging.getLogger(__name__)

T = TypeVar("T")

FIELD_MANAGER = "settings-controller"
LIST_PAGE = 500  # objects per list request
WATCH_SECONDS = 290  # the server ends a watch after this; it is resumed from the last version

# What the reconciler may write, by kind. Custom resources are only ever
# patched on their status subresource.
_BUILTIN: Mapping[str, Any] = {
    "ConfigMap": core_v1.ConfigMap,
    "Secret": core_v1.Secret,
    "Namespace": core_v1.Namespace,
}
# kind -> (API path prefix, plural, namespaced), for the raw session.
_PATHS: Mapping[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "Event": ("/api/v1", "events", True),
    catalog.GLOBAL: (f"/apis/{catalog.API_VERSION}", "globalintegrationsettings", False),
    catalog.ACCOUNT: (f"/apis/{catalog.API_VERSION}", "accounts", False),
    catalog.OVERRIDE: (f"/apis/{catalog.API_VERSION}", "integrationsettings", True),
}


def _path(kind: str, namespace: str | None, name: str = "", subresource: str = "") -> str:
    prefix, plural, namespaced = _PATHS[kind]
    # A namespaced kind without a namespace: the list/watch across all namespaces.
    path = (
        f"{prefix}/namespaces/{namespace}/{plural}"
        if namespaced and namespace is not None
        else f"{prefix}/{plural}"
    )
    if name:
        path += f"/{name}"
    return path + (f"/{subresource}" if subresource else "")


class RequestError(Exception):
    """A request the API server refused, or could not take; ``status`` is the HTTP code (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WriteError(RequestError):
    """A write (apply, status patch, Lease) that did not land."""


class ReadError(RequestError):
    """A list or watch that failed or broke."""


class Writer(Protocol):
    """What the reconciler needs from a client: the seam to fake in tests."""

    async def apply(self, manifest: Mapping[str, Any]) -> None: ...

    async def patch_status(
        self, kind: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> None: ...

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None: ...

    async def delete(self, kind: str, namespace: str | None, name: str) -> None: ...

    async def remove_labels(self, kind: str, name: str, labels: Collection[str]) -> None: ...


class Client:
    """Server-side apply under one field manager, status patches, events, and a Secret watch."""

    def __init__(
        self,
        api: AsyncClient,
        session: sessions.Session | None = None,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._api = api
        self._session = session
        self._manager = field_manager
        self._apply = {"fieldManager": field_manager, "force": "true"}
        self._custom: dict[str, Any] = {
            catalog.GLOBAL: create_global_resource(
                catalog.GROUP, catalog.VERSION, catalog.GLOBAL, "globalintegrationsettings"
            ),
            catalog.ACCOUNT: create_global_resource(
                catalog.GROUP, catalog.VERSION, catalog.ACCOUNT, "accounts"
            ),
            catalog.OVERRIDE: create_namespaced_resource(
                catalog.GROUP, catalog.VERSION, catalog.OVERRIDE, "integrationsettings"
            ),
        }

    @classmethod
    def connect(cls, kubeconfig: pathlib.Path | None, field_manager: str = FIELD_MANAGER) -> Client:
        """From a kubeconfig file, else in-cluster (the ServiceAccount), else $KUBECONFIG."""
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        api = AsyncClient(
            config, field_manager=field_manager, timeout=httpx2.Timeout(30.0), trust_env=False
        )
        return cls(api, sessions.Session.from_config(config), field_manager)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._api.close()

    async def apply(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply, forcing ownership of exactly the fields in ``manifest``."""
        if self._session is not None:
            kind, meta = manifest["kind"], manifest["metadata"]
            namespace = meta.get("namespace") if _PATHS[kind][2] else None
            try:
                await self._session.request(
                    "PATCH",
                    _path(kind, namespace, meta["name"]),
                    manifest,
                    "application/apply-patch+yaml",
                    self._apply,
                )
            except sessions.HttpError as e:
                raise WriteError(
                    f"apply {kind} {_where(namespace, meta['name'])}: {e}", e.status
                ) from e
            return
        res = _BUILTIN[manifest["kind"]]
        meta = manifest["metadata"]
        namespace = meta.get("namespace") if issubclass(res, NamespacedResource) else None
        try:
            await self._api.patch(
                res,
                meta["name"],
                dict(manifest),
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=self._manager,
                force=True,
            )
        except ApiError as e:
            raise _error(e, f"apply {manifest['kind']} {_where(namespace, meta['name'])}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"apply {manifest['kind']} {meta['name']}: {type(e).__name__}") from e

    async def patch_status(
        self, kind: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> None:
        if self._session is not None:
            try:
                await self._session.request(
                    "PATCH",
                    _path(kind, namespace, name, "status"),
                    {"status": dict(status)},
                    "application/merge-patch+json",
                )
            except sessions.HttpError as e:
                if e.status == 404:
                    return  # deleted meanwhile: nothing to report on
                raise WriteError(
                    f"status of {kind} {_where(namespace, name)}: {e}", e.status
                ) from e
            return
        res = self._custom[kind].Status
        try:
            await self._api.patch(
                res,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as e:
            if e.status.code == 404:
                return  # deleted meanwhile: nothing to report on
            raise _error(e, f"status of {kind} {_where(namespace, name)}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"status of {kind} {name}: {type(e).__name__}") from e

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about ``involved`` (cluster-scoped objects: in ``default``)."""
        now = datetime.datetime.now(datetime.UTC)
        namespace = involved.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{involved['name']}.",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        if self._session is not None:
            try:
                await self._session.request(
                    "POST", _path("Event", namespace), body, "application/json"
                )
            except sessions.HttpError as e:
                # Events are best effort: the condition carries the same message.
                log.warning("could not post event %s about %s: %s", reason, involved["name"], e)
            return
        event: core_v1.Event = core_v1.Event.from_dict(body)  # type: ignore[assignment]
        try:
            await self._api.create(event)
        except (ApiError, httpx2.HTTPError) as e:
            # Events are best effort: the condition carries the same message.
            log.warning("could not post event %s about %s: %s", reason, involved["name"], e)

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete; a missing object is no error (someone was first)."""
        where = _where(namespace, name)
        if self._session is not None:
            try:
                await self._session.request(
                    "DELETE", _path(kind, namespace, name), None, "application/json"
                )
            except sessions.HttpError as e:
                if e.status != 404:
                    raise WriteError(f"delete {kind} {where}: {e}", e.status) from e
            return
        try:
            await self._api.delete(_BUILTIN[kind], name, namespace=namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise _error(e, f"delete {kind} {where}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"delete {kind} {where}: {type(e).__name__}") from e

    async def remove_labels(self, kind: str, name: str, labels: Collection[str]) -> None:
        """Remove ``labels`` from a cluster-scoped object (a merge patch); a missing one is fine."""
        patch = {"metadata": {"labels": dict.fromkeys(labels)}}
        if self._session is not None:
            try:
                await self._session.request(
                    "PATCH", _path(kind, None, name), patch, "application/merge-patch+json"
                )
            except sessions.HttpError as e:
                if e.status != 404:
                    raise WriteError(f"unlabel {kind} {name}: {e}", e.status) from e
            return
        try:
            await self._api.patch(_BUILTIN[kind], name, patch, patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                raise _error(e, f"unlabel {kind} {name}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"unlabel {kind} {name}: {type(e).__name__}") from e

    async def list_named(
        self, kind: str, name: str, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        """What ``keep`` makes of every ``kind`` named ``name`` in all namespaces; the list's version.

        A ``metadata.name`` field selector: what RBAC's resourceNames allow a
        list for. Read a page at a time and reduced as it comes: 10,000 full
        bodies at once (managedFields and all) would be the operator's peak memory.
        """
        return await self._list(kind, _Selector(field=("metadata.name", name)), keep)

    async def list_labelled(
        self, kind: str, label: str, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        """What ``keep`` makes of every ``kind`` carrying the label ``label``; the list's version."""
        return await self._list(kind, _Selector(label=label), keep)

    def watch_named(
        self, kind: str, name: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to every ``kind`` named ``name`` after ``resource_version``, BOOKMARKs included.

        Ends when the server ends the watch; raises when it breaks, or when the
        server says the version is too old (410: list again).
        """
        return self._watch(kind, _Selector(field=("metadata.name", name)), resource_version)

    def watch_labelled(
        self, kind: str, label: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to every ``kind`` carrying ``label``; an object that loses it is DELETED."""
        return self._watch(kind, _Selector(label=label), resource_version)

    async def _list(
        self, kind: str, selector: _Selector, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        namespace = "*" if _PATHS[kind][2] else None
        if self._session is None:
            listing = self._api.list(
                _BUILTIN[kind], namespace=namespace, chunk_size=LIST_PAGE, **selector.lightkube
            )
            kept = [keep(_plain(o)) async for o in listing]
            return kept, listing.resourceVersion
        kept, params = [], {**selector.params, "limit": str(LIST_PAGE)}
        while True:
            try:
                page = await self._session.get(_path(kind, None), params)
            except sessions.HttpError as e:
                raise ReadError(f"list {kind} {selector}: {e}", e.status) from e
            kept.extend(map(keep, page.get("items") or ()))
            meta = page.get("metadata") or {}
            del page
            if not meta.get("continue"):
                return kept, str(meta.get("resourceVersion", ""))
            params = {**params, "continue": meta["continue"]}

    async def _watch(
        self, kind: str, selector: _Selector, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if self._session is None:
            async for type_, obj in self._api.watch(
                _BUILTIN[kind],
                namespace="*" if _PATHS[kind][2] else None,
                resource_version=resource_version,
                **selector.lightkube,
            ):
                yield type_, _plain(obj)
            return
        params = {
            **selector.params,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            async for event in self._session.watch(_path(kind, None), params, WATCH_SECONDS + 30):
                type_, body = str(event.get("type")), event.get("object") or {}
                if type_ == "ERROR":
                    raise ReadError(
                        f"watch {kind} {selector}: {body.get('code')} {body.get('reason')}",
                        int(body.get("code") or 0),
                    )
                yield type_, body
        except sessions.HttpError as e:
            raise ReadError(f"watch {kind} {selector}: {e}", e.status) from e

    async def secrets(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        """Every Secret in ``namespace`` as plain dicts, and the list's resourceVersion."""
        listing = self._api.list(core_v1.Secret, namespace=namespace)
        items = [_plain(s) async for s in listing]
        return items, listing.resourceVersion

    async def watch_secrets(
        self, namespace: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to Secrets in ``namespace`` after ``resource_version``; raises when it breaks."""
        async for type_, obj in self._api.watch(
            core_v1.Secret, namespace=namespace, resource_version=resource_version
        ):
            yield type_, _plain(obj)

    # --- the leader-election Lease (controller.cluster.leases) ----------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a plain dict, None if there is none; raises WriteError otherwise."""
        try:
            lease = await self._api.get(coordination_v1.Lease, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise _error(e, f"get lease {namespace}/{name}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"get lease {namespace}/{name}: {type(e).__name__}") from e
        return _plain(lease)

    async def create_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Create; WriteError with status 409 if it exists (someone was first)."""
        return await self._write_lease(lease, "create", self._api.create)

    async def replace_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion in ``lease``: WriteError 409 if it changed meanwhile."""
        return await self._write_lease(lease, "update", self._api.replace)

    async def _write_lease(self, lease: Mapping[str, Any], verb: str, call: Any) -> dict[str, Any]:
        meta = lease["metadata"]
        where = f"{meta['namespace']}/{meta['name']}"
        try:
            obj: coordination_v1.Lease = coordination_v1.Lease.from_dict(dict(lease))  # type: ignore[assignment]
            done = await call(obj)
        except ApiError as e:
            raise _error(e, f"{verb} lease {where}") from e
        except httpx2.HTTPError as e:
            raise WriteError(f"{verb} lease {where}: {type(e).__name__}") from e
        return _plain(done)


@dataclasses.dataclass(frozen=True)
class _Selector:
    """A field selector (name, value) or a label that must exist."""

    field: tuple[str, str] | None = None
    label: str | None = None

    @property
    def params(self) -> dict[str, str]:
        if self.field:
            return {"fieldSelector": "=".join(self.field)}
        return {"labelSelector": self.label or ""}

    @property
    def lightkube(self) -> dict[str, Any]:
        if self.field:
            return {"fields": dict([self.field])}
        return {"labels": {self.label: operators.exists()}}

    def __str__(self) -> str:
        return "=".join(self.field) if self.field else f"labelled {self.label}"


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(obj.to_dict()))
    return result


def _where(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _error(e: ApiError, what: str) -> WriteError:
    # The API server's message names fields, not values, for the objects we write.
    return WriteError(f"{what}: {e.status.code} {e.status.reason}", e.status.code or 0)
