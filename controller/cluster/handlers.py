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

from controller.cluster import bodies, connections, running
from controller.core import catalog

G, V = catalog.GROUP, catalog.VERSION
GLOBALS, ACCOUNTS, OVERRIDES = "globalintegrationsettings", "accounts", "integrationsettings"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    running.configure(settings)
    await running.start(memo, kwargs)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await running.stop(memo)


@kopf.on.probe(id="platformKeysListed")
def keys_listed(memo: kopf.Memo, **_: Any) -> bool:
    return running.keys_listed(memo)


# --- indexes: what the reconciler reads ------------------------------------------
# Coroutines, though they never await: kopf runs a plain function in a thread
# pool, a hop per event that costs more than the function itself.


@kopf.index(G, V, GLOBALS)
async def global_index(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> Any:
    return {name: bodies.observe(memo.catalog, body)}


@kopf.index(G, V, ACCOUNTS)
async def account_index(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> Any:
    return {name: bodies.observe(memo.catalog, body)}


@kopf.index(G, V, ACCOUNTS)
async def tenant_index(spec: kopf.Spec, name: str, **_: Any) -> Any:
    return {spec.get("namespace"): name}


@kopf.index(G, V, OVERRIDES)
async def override_index(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> Any:
    return {str(namespace): bodies.observe(memo.catalog, body)}


# --- events: what to re-render ------------------------------------------------------


@kopf.on.event(G, V, GLOBALS)
async def global_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    connections.global_seen(memo, body)  # first: a global change may start a long fan-out
    await memo.reconciler.global_changed()


@kopf.on.event(G, V, ACCOUNTS)
async def account_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.request(name)
    connections.account_seen(memo, name)


@kopf.on.event(G, V, OVERRIDES)
async def override_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.namespace(str(namespace))
    connections.namespace_seen(memo, str(namespace))
