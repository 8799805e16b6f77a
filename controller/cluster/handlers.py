"""Every kopf handler of the operator, in one place, each a line or two.

kopf runs the process: start-up and clean-up, the login, the liveness
endpoint and its probes. It follows no resource: ``running`` follows the
custom resources and everything else with a paged list and a watch each
(``resources``, ``following``), keeping one compact record per object where
kopf kept a worker, a queue and several memories (see ``resources`` for the
measurements). So kopf never stores a diff base or progress in an annotation
(an override holding a pasted key would be copied there) and never adds a
finalizer (a down operator never blocks a deletion).
"""

from __future__ import annotations

from typing import Any

import kopf

from controller.cluster import logins, running

# The operator's own registry, handed to kopf by ``running.run``: importing
# this module is not what makes the operator, and nothing else registers here.
registry = kopf.OperatorRegistry()


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    running.configure(settings)
    await running.start(memo)


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
