"""The one module that talks to the API server for the operator's own requests.

Everything the operator reads or writes goes through ``Client``: the lists
and watches of the custom resources, generated objects, labelled namespaces
and platform key Secrets, server-side applies, status patches, Events,
deletions and the leader Lease, over one aiohttp session (``sessions``: a
quarter of lightkube's client CPU per write, measured by tests/bench). Token,
client-certificate, basic and exec-plugin kubeconfigs and the in-cluster
ServiceAccount token are all served there; lightkube only parses the
kubeconfig.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import pathlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

import yaml
from lightkube import KubeConfig

from controller.cluster.runtime import correlating, kubeconfigs, records, sessions
from controller.core import catalog, credentials, errors

log = logging.getLogger(__name__)

T = TypeVar("T")

FIELD_MANAGER = records.FIELD_MANAGER
LIST_PAGE = 500  # objects per list request
WATCH_SECONDS = 290  # the server ends a watch after this; it is resumed from the last version


# kind -> (API path prefix, plural, namespaced) of the built-in kinds; the
# custom kinds' come from the catalog (schemas/), as the CRDs' do.
_BUILTIN: Mapping[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "Event": ("/api/v1", "events", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
}


class Paths:
    """Where each kind lives in the API."""

    def __init__(self, cat: catalog.Catalog | None = None) -> None:
        self._kinds = dict(_BUILTIN)
        for kind in cat.kinds.values() if cat else ():
            self._kinds[kind.name] = (f"/apis/{catalog.API_VERSION}", kind.plural, kind.namespaced)

    def namespaced(self, kind: str) -> bool:
        return self._kinds[kind][2]

    def __call__(self, kind: str, namespace: str | None, name: str = "", sub: str = "") -> str:
        prefix, plural, namespaced = self._kinds[kind]
        # A namespaced kind without a namespace: the list/watch across all namespaces.
        path = (
            f"{prefix}/namespaces/{namespace}/{plural}"
            if namespaced and namespace is not None
            else f"{prefix}/{plural}"
        )
        if name:
            path += f"/{name}"
        return path + (f"/{sub}" if sub else "")


class KubeconfigError(errors.SettingsError):
    """The kubeconfig cannot be used: missing, not a kubeconfig, no current context..."""


def load_kubeconfig(kubeconfig: pathlib.Path | None) -> KubeConfig:
    """The kubeconfig as lightkube reads it; KubeconfigError naming the file and the
    problem in one line (never a snippet of the file: it may hold a token)."""
    where = (
        str(kubeconfig)
        if kubeconfig
        else os.environ.get("KUBECONFIG") or "(in-cluster ServiceAccount or ~/.kube/config)"
    )
    try:
        if kubeconfig is not None and kubeconfig.is_dir():
            raise KubeconfigError(f"kubeconfig {where}: a directory, not a file")
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else kubeconfigs.from_env()
        config.get()  # the current context: refused here, not at the first request
        return config
    except KubeconfigError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigError(f"kubeconfig {where}: not YAML{at}") from None
    except KeyError as e:  # a key lightkube expects (a name, never a value)
        raise KubeconfigError(f"kubeconfig {where}: not a kubeconfig (no {e.args[0]!r})") from None
    except (yaml.YAMLError, AttributeError, TypeError, IndexError) as e:
        raise KubeconfigError(
            f"kubeconfig {where}: not a kubeconfig ({type(e).__name__})"
        ) from None
    except OSError as e:
        raise KubeconfigError(f"kubeconfig {where}: {e.strerror or e}") from None
    except Exception as e:  # lightkube's ConfigError: its messages name no secret
        message = str(e).replace(f"Configuration file {kubeconfig} not found", "no such file")
        raise KubeconfigError(f"kubeconfig {where}: {message}") from None


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

    async def apply_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        status: Mapping[str, Any],
        field_manager: str,
    ) -> None: ...

    async def remove_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        fields: Mapping[str, Collection[str] | None],
    ) -> None: ...

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None: ...

    async def delete(self, kind: str, namespace: str | None, name: str) -> None: ...

    async def remove_labels(self, kind: str, name: str, labels: Collection[str]) -> None: ...

    async def remove_keys(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Collection[str],
        binary_data: Collection[str] = (),
    ) -> None: ...


class Client:
    """Server-side apply (statuses under their writer's field manager), events, lists and watches."""

    def __init__(
        self,
        session: sessions.Session,
        cat: catalog.Catalog | None = None,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._session = session
        self._path = Paths(cat)
        self.events = correlating.Correlator()
        # Told "created", "aggregated" (a count patched) or "suppressed" per Event posted.
        self.on_event: Callable[[str], None] = lambda outcome: None
        self._apply = {"fieldManager": field_manager, "force": "true"}

    @classmethod
    def connect(
        cls,
        kubeconfig: pathlib.Path | None,
        cat: catalog.Catalog | None = None,
        field_manager: str = FIELD_MANAGER,
    ) -> Client:
        """From a kubeconfig file, else in-cluster (the ServiceAccount), else $KUBECONFIG;
        KubeconfigError when it cannot be used."""
        config = load_kubeconfig(kubeconfig)
        where = kubeconfig or os.environ.get("KUBECONFIG") or "(in-cluster)"
        try:
            session = sessions.Session.from_config(config)
        except ssl.SSLError as e:
            raise KubeconfigError(
                f"kubeconfig {where}: unusable certificate ({e.reason})"
            ) from None
        except OSError as e:  # a CA, client certificate or token file it names
            named = f": {e.filename}" if e.filename else ""
            raise KubeconfigError(f"kubeconfig {where}: {e.strerror or e}{named}") from None
        except ValueError as e:  # no cluster or user, an auth-provider, bad base64
            raise KubeconfigError(f"kubeconfig {where}: {e or type(e).__name__}") from None
        return cls(session, cat, field_manager)

    @property
    def session(self) -> sessions.Session:
        return self._session

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        try:
            return await self._session.request(method, path, body, content_type, params)
        except sessions.HttpError as e:
            raise WriteError(f"{what}: {e}", e.status) from e

    async def apply(self, manifest: Mapping[str, Any], dry_run: bool = False) -> None:
        """Server-side apply, forcing ownership of exactly the fields in ``manifest``
        (``dry_run``: authorized and admitted in full, nothing stored)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        namespace = meta.get("namespace") if self._path.namespaced(kind) else None
        await self._call(
            f"apply {kind} {_where(namespace, meta['name'])}",
            "PATCH",
            self._path(kind, namespace, meta["name"]),
            manifest,
            "application/apply-patch+yaml",
            {**self._apply, "dryRun": "All"} if dry_run else self._apply,
        )

    async def apply_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        status: Mapping[str, Any],
        field_manager: str,
    ) -> None:
        """Server-side apply of ``status`` on the status subresource under ``field_manager``.

        ``status`` is every status field this writer owns, and only those: a field it
        owned and leaves out is removed, a field another manager owns is left alone,
        and ``conditions`` (a map list keyed by ``type``, schemas/common.json) is
        owned entry by entry. So two writers of one object's status (the account
        reconciler, the connection checker) never drop each other's conditions, whatever
        view each computed from. ``force``: a value another manager set is taken
        over, not a 409. A missing object is no error (the status subresource never
        creates one: deleted meanwhile, nothing to report on)."""
        manifest: dict[str, Any] = {
            "apiVersion": catalog.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "status": dict(status),
        }
        try:
            await self._call(
                f"status of {kind} {_where(namespace, name)}",
                "PATCH",
                self._path(kind, namespace, name, "status"),
                manifest,
                "application/apply-patch+yaml",
                {"fieldManager": field_manager, "force": "true"},
            )
        except WriteError as e:
            if e.status != 404:
                raise

    async def remove_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        fields: Mapping[str, Collection[str] | None],
    ) -> None:
        """Remove status fields (field -> the keys of that map to remove, or None: the whole
        field) with a merge patch: it removes them whatever manager owns them, which an
        apply cannot (what the operator wrote before its statuses were applied is owned
        by that older write)."""
        try:
            await self._call(
                f"status of {kind} {_where(namespace, name)}",
                "PATCH",
                self._path(kind, namespace, name, "status"),
                {
                    "status": {
                        field: None if keys is None else dict.fromkeys(keys)
                        for field, keys in fields.items()
                    }
                },
                "application/merge-patch+json",
            )
        except WriteError as e:
            if e.status != 404:
                raise

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about ``involved`` (cluster-scoped objects: in ``default``),
        aggregated, deduplicated and rate-limited per object (``correlating``)."""
        now = time.time()
        # A name in the message may be shaped like a key: masked as the core prints it.
        write = self.events.correlate(
            involved, type_, reason, credentials.redact(message)[:1024], now
        )
        if write is None:
            self.on_event("suppressed")
            return
        stamp = _timestamp(now)
        try:
            if not write.create:
                try:
                    await self._call(
                        "event",
                        "PATCH",
                        self._path("Event", write.namespace, write.name),
                        {"count": write.count, "lastTimestamp": stamp, "message": write.message},
                        "application/merge-patch+json",
                    )
                    self.on_event("aggregated")
                    return
                except WriteError as e:
                    if e.status != 404:  # expired (the API server keeps Events an hour)
                        raise
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": write.name, "namespace": write.namespace},
                "involvedObject": dict(involved),
                "type": type_,
                "reason": reason,
                "message": write.message,
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": FIELD_MANAGER,
                "reportingInstance": FIELD_MANAGER,
                "firstTimestamp": _timestamp(write.first),
                "lastTimestamp": stamp,
                "count": write.count,
            }
            await self._call("event", "POST", self._path("Event", write.namespace), body)
            self.on_event("created")
        except WriteError as e:
            # Events are best effort: the condition carries the same message.
            log.warning("could not post event %s about %s: %s", reason, involved["name"], e)

    async def post(
        self, what: str, path: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` (a review, a dry-run create); WriteError with the status."""
        return sessions.decode(await self._call(what, "POST", path, body, params=params))

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete; a missing object is no error (someone was first)."""
        try:
            await self._call(
                f"delete {kind} {_where(namespace, name)}",
                "DELETE",
                self._path(kind, namespace, name),
            )
        except WriteError as e:
            if e.status != 404:
                raise

    async def remove_labels(self, kind: str, name: str, labels: Collection[str]) -> None:
        """Remove ``labels`` from a cluster-scoped object (a merge patch); a missing one is fine."""
        patch = {"metadata": {"labels": dict.fromkeys(labels)}}
        try:
            await self._call(
                f"unlabel {kind} {name}",
                "PATCH",
                self._path(kind, None, name),
                patch,
                "application/merge-patch+json",
            )
        except WriteError as e:
            if e.status != 404:
                raise

    async def remove_keys(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Collection[str],
        binary_data: Collection[str] = (),
    ) -> None:
        """Remove keys from a ConfigMap's or Secret's data and binaryData (a merge patch:
        it removes fields whatever field manager owns them, which an apply cannot)."""
        patch: dict[str, Any] = {}
        if data:
            patch["data"] = dict.fromkeys(data)
        if binary_data:
            patch["binaryData"] = dict.fromkeys(binary_data)
        try:
            await self._call(
                f"remove keys of {kind} {_where(namespace, name)}",
                "PATCH",
                self._path(kind, namespace, name),
                patch,
                "application/merge-patch+json",
                {"fieldManager": self._apply["fieldManager"]},
            )
        except WriteError as e:
            if e.status != 404:
                raise

    # --- lists and watches ---------------------------------------------------------

    async def list_every(
        self, kind: str, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        """What ``keep`` makes of every ``kind`` in all namespaces, a page at a time; the
        list's version."""
        return await self._list(kind, None, _Selector(), keep)

    def watch_every(
        self, kind: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to every ``kind`` after ``resource_version``, BOOKMARKs included."""
        return self._watch(kind, None, _Selector(), resource_version)

    async def list_named(
        self, kind: str, name: str, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        """What ``keep`` makes of every ``kind`` named ``name`` in all namespaces; the list's version.

        A ``metadata.name`` field selector: what RBAC's resourceNames allow a
        list for. Read a page at a time and reduced as it comes: 10,000 full
        bodies at once (managedFields and all) would be the operator's peak memory.
        """
        return await self._list(kind, None, _Selector(field=("metadata.name", name)), keep)

    async def list_labelled(
        self, kind: str, label: str, keep: Callable[[dict[str, Any]], T]
    ) -> tuple[list[T], str]:
        """What ``keep`` makes of every ``kind`` carrying the label ``label``; the list's version."""
        return await self._list(kind, None, _Selector(label=label), keep)

    def watch_named(
        self, kind: str, name: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to every ``kind`` named ``name`` after ``resource_version``, BOOKMARKs included.

        Ends when the server ends the watch; raises when it breaks, or when the
        server says the version is too old (410: list again).
        """
        return self._watch(kind, None, _Selector(field=("metadata.name", name)), resource_version)

    def watch_labelled(
        self, kind: str, label: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to every ``kind`` carrying ``label``; an object that loses it is DELETED."""
        return self._watch(kind, None, _Selector(label=label), resource_version)

    async def secrets(
        self, namespace: str, name: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every Secret in ``namespace`` (only the one called ``name``, by a field selector)
        as plain dicts, and the list's resourceVersion."""
        return await self._list("Secret", namespace, _named(name), dict)

    def watch_secrets(
        self, namespace: str, resource_version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to Secrets in ``namespace`` (only the one called ``name``) after
        ``resource_version``; raises when it breaks."""
        return self._watch("Secret", namespace, _named(name), resource_version)

    async def _list(
        self,
        kind: str,
        namespace: str | None,
        selector: _Selector,
        keep: Callable[[dict[str, Any]], T],
    ) -> tuple[list[T], str]:
        kept: list[T] = []
        params = {**selector.params, "limit": str(LIST_PAGE)}
        while True:
            try:
                page = await self._session.get(self._path(kind, namespace), params)
            except sessions.HttpError as e:
                raise ReadError(f"list {kind} {selector}: {e}", e.status) from e
            kept.extend(map(keep, page.get("items") or ()))
            meta = page.get("metadata") or {}
            del page
            if not meta.get("continue"):
                return kept, str(meta.get("resourceVersion", ""))
            params = {**params, "continue": meta["continue"]}

    async def _watch(
        self, kind: str, namespace: str | None, selector: _Selector, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        params = {
            **selector.params,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        path = self._path(kind, namespace)
        try:
            async for event in self._session.watch(path, params, WATCH_SECONDS + 30):
                type_, body = str(event.get("type")), event.get("object") or {}
                if type_ == "ERROR":
                    raise ReadError(
                        f"watch {kind} {selector}: {body.get('code')} {body.get('reason')}",
                        int(body.get("code") or 0),
                    )
                yield type_, body
        except sessions.HttpError as e:
            raise ReadError(f"watch {kind} {selector}: {e}", e.status) from e

    # --- who may read /metrics (controller.cluster.serving) --------------------------

    async def review_token(self, token: str) -> dict[str, Any]:
        """A TokenReview's status: ``authenticated`` and ``user`` (name, uid, groups, extra)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        raw = await self._call(
            "token review", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body
        )
        return dict(sessions.decode(raw).get("status") or {})

    async def review_access(self, user: Mapping[str, Any], path: str, verb: str) -> bool:
        """Whether ``user`` (a TokenReview's) may ``verb`` the non-resource URL ``path``."""
        spec: dict[str, Any] = {
            "user": user.get("username", ""),
            "groups": list(user.get("groups") or ()),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        raw = await self._call(
            "access review", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body
        )
        return bool((sessions.decode(raw).get("status") or {}).get("allowed"))

    # --- the leader-election Lease (controller.cluster.leases) ----------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a plain dict, None if there is none; raises WriteError otherwise."""
        try:
            return await self._lease_call("get", "GET", namespace, name)
        except WriteError as e:
            if e.status == 404:
                return None
            raise

    async def create_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Create; WriteError with status 409 if it exists (someone was first)."""
        meta = lease["metadata"]
        return await self._lease_call("create", "POST", meta["namespace"], meta["name"], lease)

    async def replace_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion in ``lease``: WriteError 409 if it changed meanwhile."""
        meta = lease["metadata"]
        return await self._lease_call("update", "PUT", meta["namespace"], meta["name"], lease)

    async def _lease_call(
        self,
        verb: str,
        method: str,
        namespace: str,
        name: str,
        lease: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request on the Lease ``namespace/name``, its answer decoded.

        A POST goes to the namespace's collection (it creates), the others to
        the Lease itself; a failure is a WriteError "<verb> lease namespace/name: ...".
        """
        path = self._path("Lease", namespace, "" if method == "POST" else name)
        raw = await self._call(f"{verb} lease {namespace}/{name}", method, path, lease)
        return sessions.decode(raw)


@dataclasses.dataclass(frozen=True)
class _Selector:
    """A field selector (name, value), a label that must exist, or neither."""

    field: tuple[str, str] | None = None
    label: str | None = None

    @property
    def params(self) -> dict[str, str]:
        if self.field:
            return {"fieldSelector": "=".join(self.field)}
        return {"labelSelector": self.label} if self.label else {}

    def __str__(self) -> str:
        if self.field:
            return "=".join(self.field)
        return f"labelled {self.label}" if self.label else "all"


def _named(name: str | None) -> _Selector:
    return _Selector(field=("metadata.name", name)) if name is not None else _Selector()


def _timestamp(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _where(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name
