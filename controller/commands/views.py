"""One account's effective settings as ``get`` shows them, read from declarations or a cluster.

Each source is read for that account only where it can be: a cluster by name
(the Account, its ConfigMap, its namespace's IntegrationSettings), declarations
through the record ``reconcile``/``watch`` keep in ``OUT`` (which files fed the
account), else one pass over every declaration.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core import catalog, merging, rendering
from controller.files import reconciling, records, reports

# Keys of ``<type>.json`` that describe the document, not a setting.
_META = catalog.RESERVED_FIELDS


@dataclasses.dataclass(frozen=True)
class Integration:
    type: str
    document: Mapping[str, Any]  # the ``<type>.json`` a workload reads

    @property
    def enabled(self) -> bool:
        return bool(self.document.get("enabled"))

    @property
    def overridden(self) -> Sequence[str]:
        return list(self.document.get("overridden") or ())

    @property
    def using_global(self) -> bool:
        return bool(self.document.get("using_global"))

    def values(self, cat: catalog.Catalog) -> list[tuple[str, Any]]:
        """The settings, in schema order (the order of the effective JSON's fields)."""
        known = cat.integrations.get(self.type)
        order = list(known.fields) if known else []
        names = [k for k in self.document if k not in _META]
        names.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
        return [(k, self.document[k]) for k in names]


@dataclasses.dataclass(frozen=True)
class AccountView:
    name: str
    plan: str
    namespace: str
    integrations: tuple[Integration, ...]
    statuses: tuple[str, ...] = ()  # one line per object, cluster mode only


class NotFound(Exception):
    """The account (or its ConfigMap) is not there, or the cluster cannot be read; the
    message says which."""


def from_result(result: merging.AccountResult) -> AccountView:
    account = result.account
    return AccountView(
        account.name,
        account.plan,
        account.namespace,
        tuple(Integration(i.type, i.document()) for i in result.integrations),
    )


def from_declarations(
    cat: catalog.Catalog, root: pathlib.Path, account: str, out: pathlib.Path | None
) -> tuple[reconciling.Reconciler, reports.PassReport, merging.AccountResult | None]:
    """Merge ``account``: from the files the record of ``out`` lists for it when there is one
    (milliseconds at 100,000 accounts), else from a pass over every file under ``root``."""
    found = records.lookup(out, account) if out is not None else None
    if found is not None:
        reconciler = reconciling.Reconciler(cat, root, files=found[1].sources)
        report = reconciler.run()
        result = _named(reconciler, account)
        if result is not None:
            return reconciler, report, result
        # The files moved on since that pass (the account went elsewhere): read them all.
    reconciler = reconciling.Reconciler(cat, root)
    report = reconciler.run()
    return reconciler, report, _named(reconciler, account)


def _named(reconciler: reconciling.Reconciler, account: str) -> merging.AccountResult | None:
    return next((r for r in reconciler.results.values() if r.account.name == account), None)


def from_cluster(
    kubeconfig: pathlib.Path | None, account: str, context: str | None = None
) -> AccountView:
    """The Account, its ConfigMap and the statuses of both kinds, as the API server has them."""
    # Imported here: file-mode commands should not pay for the Kubernetes client.
    import httpx2
    import lightkube
    from lightkube.core import exceptions

    try:
        return _from_cluster(kubeconfig, account, context)
    except exceptions.ConfigError as e:
        raise NotFound(f"no usable kubeconfig: {e}") from e
    except lightkube.ApiError as e:
        raise NotFound(f"the API server refused: {e.status.code} {e.status.reason}") from e
    except httpx2.HTTPError as e:
        raise NotFound(f"cannot reach the API server: {type(e).__name__}") from e


def _from_cluster(
    kubeconfig: pathlib.Path | None, account: str, context: str | None
) -> AccountView:
    import lightkube
    from lightkube.generic_resource import create_global_resource, create_namespaced_resource
    from lightkube.resources import core_v1

    from controller.cluster.runtime import kubeconfigs

    # $KUBECONFIG as kubectl reads it (a list of files, merged); errors name the file only.
    every = kubeconfigs.from_file(kubeconfig) if kubeconfig else kubeconfigs.from_env()
    # get() raises ConfigError for a context the file does not have.
    config = every.get(context_name=context) if context is not None else every
    accounts = create_global_resource(catalog.GROUP, catalog.VERSION, catalog.ACCOUNT, "accounts")
    overrides = create_namespaced_resource(
        catalog.GROUP, catalog.VERSION, catalog.OVERRIDE, "integrationsettings"
    )
    with lightkube.Client(config, trust_env=False) as client:
        try:
            body = _plain(client.get(accounts, account))
        except lightkube.ApiError as e:
            if e.status.code == 404:
                raise NotFound(f"account {account!r} not found") from e
            raise
        spec = body.get("spec") or {}
        namespace = str(spec.get("namespace") or account)
        statuses = [_status(f"Account {account}", body)]
        try:
            items = [_plain(o) for o in client.list(overrides, namespace=namespace)]
        except lightkube.ApiError as e:
            if e.status.code != 404:
                raise
            items = []
        statuses.extend(
            _status(f"IntegrationSettings {namespace}/{o['metadata']['name']}", o) for o in items
        )
        try:
            cm = client.get(core_v1.ConfigMap, rendering.CONFIGMAP_NAME, namespace=namespace)
        except lightkube.ApiError as e:
            if e.status.code == 404:
                raise NotFound(
                    f"account {account!r}: no ConfigMap {namespace}/{rendering.CONFIGMAP_NAME} "
                    f"yet ({statuses[0]})"
                ) from e
            raise
    data = cm.data or {}
    integrations = tuple(
        Integration(key.removesuffix(".json"), json.loads(text))
        for key, text in sorted(data.items())
        if key.endswith(".json")
    )
    return AccountView(account, str(spec.get("plan", "")), namespace, integrations, tuple(statuses))


def _plain(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())


def _status(what: str, body: Mapping[str, Any]) -> str:
    """``what: Ready=True (Reason): message`` from the object's Ready condition."""
    found = (body.get("status") or {}).get("conditions") or []
    ready = next((c for c in found if c.get("type") == "Ready"), None)
    if ready is None:
        return f"{what}: no status yet"
    text = f"{what}: Ready={ready.get('status')} ({ready.get('reason', '')})"
    message = ready.get("message")
    return f"{text}: {message}" if message else text
