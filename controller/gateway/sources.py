"""Where the gateway's answers come from: who a bearer token is, what its account may use,
and the platform key a credential needs.

``Source`` is the seam between the HTTP side (``serving``) and a mode: ``local`` reads a
directory of declarations, a token file and a keys directory; ``cluster`` follows the API
server and asks it who a token is (TokenReview). ``serving`` never reads a file or a Kubernetes object itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from controller.core import catalog, decisions, declarations, enforcement, merging


@dataclasses.dataclass(frozen=True)
class Credential:
    """A platform key and the only place it may be sent."""

    endpoint: str  # the credential's base URL (its ``endpoint``, else the provider's)
    key: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """One account's effective settings, as the ConfigMap would carry them."""

    namespace: str
    account: str
    plan: str  # as declared in the global, else "unknown" (a bounded metrics label)
    result: merging.AccountResult


def settings_of(
    cat: catalog.Catalog,
    namespace: str,
    decision: decisions.Decision,
    global_: declarations.GlobalSettings | None,
) -> Settings | enforcement.Refusal:
    """What either source answers for ``namespace`` once ``decisions.decide`` has spoken: the
    refusal when no single Account claims it, else the account's merge (the ConfigMap's)."""
    refused = enforcement.account_of(decision)
    if refused is not None:
        return refused
    account = decision.account
    assert account is not None and global_ is not None  # account_of said RENDER
    result = merging.merge_account(cat, global_, account, decision.overrides)
    plan = account.plan if global_.allows_overrides(account.plan) is not None else "unknown"
    return Settings(namespace, account.name, plan, result)


class Source(Protocol):
    catalog: catalog.Catalog

    async def authenticate(self, token: str) -> str | enforcement.Refusal:
        """The account namespace a bearer token acts for, or a 401 refusal (never quoting it)."""
        ...

    def settings(self, namespace: str) -> Settings | enforcement.Refusal:
        """The effective settings of the account that claims ``namespace`` (``decisions.decide``)."""
        ...

    def credential(self, integration: str, slot: str) -> Credential | None:
        """The key of one credential slot of the global, and its endpoint; None when absent."""
        ...

    def secrets(self) -> Sequence[str]:
        """Every key value the gateway holds: what no answer may carry a fragment of."""
        ...
