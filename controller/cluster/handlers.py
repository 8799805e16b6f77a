"""Every kopf handler of the operator, in one place, each a line or two.

Only indexes and ``@kopf.on.event``: no change-detecting handler (create,
update, resume, delete), so kopf never stores a diff base or progress in an
annotation (an override holding a pasted key would be copied there) and never
adds a finalizer (a down operator never blocks a deletion). Lost events are
covered by the periodic resync in ``running``. kopf follows the custom
resources only; the generated ConfigMaps and Secrets are followed by
``generated`` (see ``following`` for why).
"""

from __future__ import annotations

from typing import Any

import kopf

from controller.cluster import bodies, connections, logins, running
from controller.core import catalog

G, V = catalog.GROUP, catalog.VERSION
# The operator's own registry, handed to kopf by ``running.run``: importing
# this module is not what makes the operator, and nothing else registers here.
registry = kopf.OperatorRegistry()
# Selected by kind (kopf matches any of a resource's names): the plurals live
# in schemas/ alone, and the CRDs are generated from them.
GLOBALS, ACCOUNTS, OVERRIDES = catalog.GLOBAL, catalog.ACCOUNT, catalog.OVERRIDE


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    running.configure(settings)
    await running.start(memo, kwargs)


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    credentials = logins.connection(memo.options.kubeconfig)
    if credentials is None:  # an exec plugin or auth provider: what kopf itself can do
        return kopf.login_with_kubeconfig(**_) or kopf.login_with_service_account(**_)
    return credentials


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await running.stop(memo)


@kopf.on.probe(id="platformKeysListed", registry=registry)
def keys_listed(memo: kopf.Memo, **_: Any) -> bool:
    return running.keys_listed(memo)


# --- indexes: what the reconciler reads ------------------------------------------
# Coroutines, though they never await: kopf runs a plain function in a thread
# pool, a hop per event that costs more than the function itself.


@kopf.index(G, V, GLOBALS, registry=registry)
async def global_index(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> Any:
    return {name: bodies.observe(memo.catalog, body)}


@kopf.index(G, V, ACCOUNTS, registry=registry)
async def account_index(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> Any:
    return {name: bodies.observe(memo.catalog, body, memo.options.reserved_namespaces)}


@kopf.index(G, V, ACCOUNTS, registry=registry)
async def tenant_index(spec: kopf.Spec, name: str, **_: Any) -> Any:
    return {spec.get("namespace"): name}


@kopf.index(G, V, OVERRIDES, registry=registry)
async def override_index(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> Any:
    return {str(namespace): bodies.observe(memo.catalog, body)}


# --- events: what to re-render ------------------------------------------------------


@kopf.on.event(G, V, GLOBALS, registry=registry)
async def global_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    connections.global_seen(memo, body)  # first: a global change may start a long fan-out
    await memo.reconciler.global_changed()


@kopf.on.event(G, V, ACCOUNTS, registry=registry)
async def account_event(
    name: str, body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await memo.reconciler.account_changed(name, body, deleted=type == "DELETED")
    connections.account_seen(memo, name)


@kopf.on.event(G, V, OVERRIDES, registry=registry)
async def override_event(
    namespace: str | None, name: str, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    memo.reconciler.override_changed(str(namespace), name, deleted=type == "DELETED")
    connections.namespace_seen(memo, str(namespace))
