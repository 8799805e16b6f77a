"""Cluster mode: declarations followed from the API server, identities by TokenReview, keys
from the one Secret (or few) the global names.

**What is followed**, through the operator's own runtime (``following``, ``resources``,
``secrets``: one list, then a watch from its version, no polling): the
GlobalIntegrationSettings, the Accounts and the IntegrationSettings (every namespace,
parsed by ``records.observe`` as the operator parses them), and each platform key Secret
the global references, *by name* in the platform namespace (``following.secrets_in(...,
name=...)``: a ``metadata.name`` field selector on the list and the watch, which RBAC's
``resourceNames`` admits). No Secret or ConfigMap is read cluster-wide, and no Namespace:
``decisions.decide`` needs only the Accounts, the overrides and the global (the plan labels
on namespaces are the operator's output, not an input). When the global starts or stops
naming a Secret, its follow starts or stops. A change reaches the next request as soon as
its watch event is applied: the effective settings are cached per namespace and the cache
dropped at every change of the three kinds.

**Identities: TokenReview, not the issuer's discovery keys.** A workload sends its
projected ServiceAccount token; the gateway asks the API server
(``authentication.k8s.io/v1`` TokenReview, ``spec.audiences: [--audience]``) and takes the
namespace from ``status.user.username``, which must read
``system:serviceaccount:<namespace>:<name>``; anything else is 401. Why TokenReview:

- it is the API server's own verdict, so a token whose ServiceAccount, Pod or Secret was
  deleted is refused (a bound token is only valid while its object exists), which
  verifying the JWT's signature locally cannot see; the audience is checked there too;
- it needs nothing but ``create tokenreviews`` (no route to the issuer's
  ``/.well-known/openid-configuration`` and JWKS, which many clusters do not serve to
  pods, nor key rotation to follow), and it works for any token authenticator the
  cluster runs.

Its cost: one API call for each token not seen recently (7-15 ms measured on the test
control plane, a shared 2-core machine; the call is bounded by ``review_timeout`` and at
most ``reviews`` run at once). Verdicts are cached by the token's sha256 (never the token) for ``min(the token's
exp, ttl)`` (60 s by default) and at most ``cache_size`` entries (the oldest evicted
first): a workload's token is reviewed about once a minute per replica, whatever its
request rate. The price of the cache: a token revoked (its Pod or ServiceAccount
deleted) keeps working until its entry expires, at most ``ttl``, plus the up to 10 s the
API server keeps its own verdict of a token (kube-apiserver's token cache). A refusal is cached too
(for ``refused_ttl``, 5 s), so a client retrying a bad token does not cost an API call
per attempt; a review that fails (the API server unreachable, slow, or refusing the
gateway's own request) is not cached and answers 503 ``identity_unavailable``.

What is not a ServiceAccount JWT by its shape (three base64url parts, at most
``MAX_TOKEN`` bytes) is refused without a review: a static token, a huge one, one with a
newline or other bytes no JWT holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import dataclasses
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from controller.cluster.runtime import (
    clients,
    following,
    records,
    resources,
    secrets,
    supervising,
)
from controller.core import catalog, connections, decisions, declarations, enforcement
from controller.gateway import sources

log = logging.getLogger("settings_controller.gateway")

DEFAULT_AUDIENCE = "integrations.igny8.com"
IDENTITY_UNAVAILABLE = "identity_unavailable"
INVALID_TOKEN = "invalid_token"  # serving.INVALID_TOKEN
MAX_TOKEN = 16 << 10  # bytes: a projected token is about 1 KiB
SERVICE_ACCOUNT = "system:serviceaccount:"
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


@dataclasses.dataclass(frozen=True)
class Reviews:
    """How identities are checked and remembered (see the module docstring)."""

    audience: str = DEFAULT_AUDIENCE
    ttl: float = 60.0  # seconds a verdict is kept (less when the token expires sooner)
    refused_ttl: float = 5.0  # seconds a refusal is kept
    cache_size: int = 10_000  # verdicts kept at most
    review_timeout: float = 5.0  # seconds one TokenReview may take
    reviews: int = 16  # TokenReviews in flight at once


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _expiry(token: str) -> float | None:
    """The token's ``exp`` (Unix seconds), read without verifying: only to keep its verdict
    no longer than the token lives (the verdict itself is the API server's)."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def namespace_of(status: Mapping[str, Any], audience: str) -> str | enforcement.Refusal:
    """The namespace a TokenReview's status authenticates, or why not (never the token)."""
    if status.get("authenticated") is not True:
        return enforcement.Refusal(
            401,
            INVALID_TOKEN,
            "the token is not valid for this gateway (expired, revoked, or not for audience "
            f"{audience})",
        )
    audiences = status.get("audiences")
    if isinstance(audiences, list) and audiences and audience not in audiences:
        return enforcement.Refusal(401, INVALID_TOKEN, f"the token is not for audience {audience}")
    user = status.get("user") or {}
    username = user.get("username") if isinstance(user, Mapping) else None
    if not isinstance(username, str) or not username.startswith(SERVICE_ACCOUNT):
        return enforcement.Refusal(401, INVALID_TOKEN, "the token is not a ServiceAccount's")
    namespace, sep, name = username.removeprefix(SERVICE_ACCOUNT).partition(":")
    if not sep or not namespace or not name or ":" in name:
        return enforcement.Refusal(401, INVALID_TOKEN, "the token is not a ServiceAccount's")
    return namespace


class ClusterSource:
    """``sources.Source`` over the API server (see the module docstring)."""

    def __init__(
        self,
        cat: catalog.Catalog,
        client: clients.Client,
        namespace: str,
        reviews: Reviews | None = None,
        *,
        reserved: Collection[str] = declarations.RESERVED_NAMESPACES,
        on_failure: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = cat
        self.client = client
        self.namespace = namespace  # where the platform key Secrets live
        self.reviews = reviews or Reviews()
        self._clock = clock
        observe = functools.partial(
            records.observe, cat, reserved=tuple(sorted({*reserved, namespace}))
        )
        self.globals = resources.Resources(catalog.GLOBAL, observe)
        self.accounts = resources.Resources(catalog.ACCOUNT, observe, group=lambda o: o.claims)
        self.overrides = resources.Resources(catalog.OVERRIDE, observe)
        self.world = records.World(self.accounts.grouped, self.overrides.grouped)
        self.on_failure = on_failure  # a follow that ended: the process stops (the command)
        # Told each TokenReview's outcome (authenticated, refused, failed) and its seconds.
        self.on_review: Callable[[str, float], None] = lambda outcome, seconds: None
        self.supervisor = supervising.Supervisor(on_failure=lambda: self.on_failure())
        self.keys: dict[str, secrets.SecretStore] = {}  # Secret name -> its store
        self._key_tasks: dict[str, asyncio.Task[None]] = {}
        self._key_follows = 0  # root tasks' names must be unique: numbered
        self._cache: dict[str, sources.Settings | enforcement.Refusal] = {}
        self._credentials: dict[tuple[str, str], sources.Credential] = {}
        self._secrets: tuple[str, ...] = ()
        self._verdicts: collections.OrderedDict[bytes, tuple[float, str | enforcement.Refusal]] = (
            collections.OrderedDict()
        )
        self._in_flight: dict[bytes, asyncio.Task[str | enforcement.Refusal]] = {}
        self._slots = asyncio.Semaphore(self.reviews.reviews)
        self.generation = 0  # bumped at every change applied
        self.review_calls = 0  # TokenReviews sent (tests read it)

    @property
    def _singleton(self) -> str:
        return self.catalog.kinds[catalog.GLOBAL].singleton_name or "default"

    def _global(self) -> declarations.GlobalSettings | None:
        observed = self.globals.named.get(self._singleton)
        decl = observed.declaration if observed else None
        return decl if isinstance(decl, declarations.GlobalSettings) else None

    # --- sources.Source -------------------------------------------------------------

    async def authenticate(self, token: str) -> str | enforcement.Refusal:
        if len(token) > MAX_TOKEN or not _JWT.fullmatch(token):
            return enforcement.Refusal(
                401, INVALID_TOKEN, "the bearer token is not a ServiceAccount token"
            )
        digest = _digest(token)
        now = self._clock()
        hit = self._verdicts.get(digest)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            del self._verdicts[digest]
        # One review per token, however many requests bring it at once; a review runs as
        # its own task, so a client that goes away does not cancel it for the others.
        task = self._in_flight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._reviewed(digest, token, now))
            self._in_flight[digest] = task
            task.add_done_callback(lambda _: self._in_flight.pop(digest, None))
        return await asyncio.shield(task)

    async def _reviewed(self, digest: bytes, token: str, now: float) -> str | enforcement.Refusal:
        started = time.perf_counter()
        verdict = await self._review(token)
        outcome = (
            "authenticated"
            if isinstance(verdict, str)
            else ("failed" if verdict.status >= 500 else "refused")
        )
        self.on_review(outcome, time.perf_counter() - started)
        if not (isinstance(verdict, enforcement.Refusal) and verdict.status >= 500):
            self._remember(digest, token, verdict, now)
        return verdict

    async def _review(self, token: str) -> str | enforcement.Refusal:
        r = self.reviews
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [r.audience]},
        }
        try:
            async with asyncio.timeout(r.review_timeout):
                async with self._slots:
                    self.review_calls += 1
                    answer = await self.client.post("token review", TOKENREVIEWS, body)
        except TimeoutError:
            log.warning("TokenReview: no answer within %gs", r.review_timeout)
            return _unavailable(
                f"the API server did not review the token within {r.review_timeout:g} s"
            )
        except clients.RequestError as e:
            log.warning("TokenReview failed: %s", e.status or "no answer")
            return _unavailable(
                f"the API server did not review the token ({e.status or 'no answer'})"
            )
        except Exception as e:  # a connection error, an undecodable answer
            log.warning("TokenReview failed: %s", type(e).__name__)
            return _unavailable(f"the API server did not review the token ({type(e).__name__})")
        status = answer.get("status") if isinstance(answer, Mapping) else None
        return namespace_of(status if isinstance(status, Mapping) else {}, r.audience)

    def _remember(
        self, digest: bytes, token: str, verdict: str | enforcement.Refusal, now: float
    ) -> None:
        r = self.reviews
        until = now + (r.refused_ttl if isinstance(verdict, enforcement.Refusal) else r.ttl)
        exp = _expiry(token)
        if exp is not None:
            until = min(until, exp)
        if until <= now:
            return
        self._verdicts[digest] = (until, verdict)
        self._verdicts.move_to_end(digest)
        while len(self._verdicts) > r.cache_size:
            self._verdicts.popitem(last=False)

    @property
    def cached_verdicts(self) -> int:
        return len(self._verdicts)

    def settings(self, namespace: str) -> sources.Settings | enforcement.Refusal:
        hit = self._cache.get(namespace)
        if hit is None:
            hit = self._cache[namespace] = self._settings(namespace)
        return hit

    def _settings(self, namespace: str) -> sources.Settings | enforcement.Refusal:
        global_ = self._global()
        decision = decisions.decide(self.world, namespace, global_)
        return sources.settings_of(self.catalog, namespace, decision, global_)

    def credential(self, integration: str, slot: str) -> sources.Credential | None:
        return self._credentials.get((integration, slot))

    def secrets(self) -> Sequence[str]:
        return self._secrets

    # --- following the API server -----------------------------------------------------

    async def start(self, keys_timeout: float = 10.0) -> None:
        """Follow the three kinds and the key Secrets; return once each is listed (the key
        Secrets: at most ``keys_timeout`` seconds, then without the missing ones)."""
        c = self.client
        for store in (self.globals, self.accounts, self.overrides):
            self.supervisor.start(
                f"follow {store.kind} objects",
                following.resources_of(c, store, self._changed(store is self.globals)),
            )
        for store in (self.globals, self.accounts, self.overrides):
            await store.ready.wait()
        self._follow_keys()
        waiting = [s.ready.wait() for s in self.keys.values()]
        if waiting:
            try:
                async with asyncio.timeout(keys_timeout):
                    await asyncio.gather(*waiting)
            except TimeoutError:
                log.warning(
                    "the key Secrets in %s are not listed yet: requests that need them get 503 "
                    "key_missing until they are",
                    self.namespace,
                )
        log.info(
            "listed: %d %s, %d %s, %d %s; key Secrets followed: %s",
            len(self.globals),
            catalog.GLOBAL,
            len(self.accounts),
            catalog.ACCOUNT,
            len(self.overrides),
            catalog.OVERRIDE,
            ", ".join(f"{self.namespace}/{n}" for n in sorted(self.keys)) or "none",
        )

    def _changed(self, is_global: bool) -> Callable[[list[resources.Change]], Any]:
        async def changed(changes: list[resources.Change]) -> None:
            if all(records.same_but_status(b, a) for b, a in changes):
                return  # the operator's status patches: nothing the gateway reads
            self._cache.clear()
            self.generation += 1
            if is_global:
                self._follow_keys()
                self._read_keys()

        return changed

    def _follow_keys(self) -> None:
        """Follow each Secret the global names (and no other)."""
        global_ = self._global()
        wanted = {
            ref.secret_name
            for integration in (global_.integrations.values() if global_ else ())
            for ref in integration.credentials.values()
        }
        for name in sorted(set(self.keys) - wanted):
            del self.keys[name]
            task = self._key_tasks.pop(name, None)
            if task is not None:
                task.cancel()
        for name in sorted(wanted - set(self.keys)):
            store = self.keys[name] = secrets.SecretStore()
            self._key_follows += 1
            self._key_tasks[name] = self.supervisor.start(
                f"follow Secret {self.namespace}/{name} ({self._key_follows})",
                following.secrets_in(
                    self.client, self.namespace, store, self._keys_changed, name=name
                ),
            )

    async def _keys_changed(self, names: frozenset[str]) -> None:
        self._read_keys()

    def _read_keys(self) -> None:
        global_ = self._global()
        found: dict[tuple[str, str], sources.Credential] = {}
        for target in connections.targets(self.catalog, global_) if global_ else ():
            store = self.keys.get(target.secret_name)
            value = store.value(target.secret_name, target.key) if store else None
            key = _decoded(value)
            if key:
                found[(target.integration, target.slot)] = sources.Credential(target.endpoint, key)
        if found != self._credentials:
            self._credentials = found
            self._secrets = tuple(sorted({c.key for c in found.values()}))
            self.generation += 1

    async def stop(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        await self.supervisor.stop()
        await self.client.close()


def _decoded(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8").strip() or None
    except (binascii.Error, ValueError):
        return None


def _unavailable(message: str) -> enforcement.Refusal:
    return enforcement.Refusal(503, IDENTITY_UNAVAILABLE, message)
