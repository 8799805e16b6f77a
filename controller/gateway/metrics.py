"""What the gateway counts, for Prometheus: per plan always, per account when asked.

Label values are bounded: ``plan`` takes the plans the global declares (an unknown plan is
counted as ``unknown``), ``outcome`` the error codes of the README's Gateway table plus ``ok`` and the
provider's status class, ``route`` the three routes. Per-account series are opt-in
(``--metrics-accounts N``): the first N accounts seen get their own ``account`` label,
every later one is counted as ``other``, so a gateway in front of 10,000 accounts exposes
at most N + 1 account series per metric.

Token counts come from the provider's ``usage`` (``prompt_tokens``, ``completion_tokens``),
read from the final answer or, when streaming, from the last event that carries one. The
gateway's own time (``overhead``) excludes the time spent waiting on the provider.
"""

from __future__ import annotations

import threading
from typing import Any

import prometheus_client

OTHER = "other"
# Seconds: the gateway's own work is sub-millisecond when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    def __init__(self, accounts: int = 0) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.accounts = accounts
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, ...], Any] = {}
        self.requests = prometheus_client.Counter(
            "settings_gateway_requests",
            "Requests by route, plan and outcome (ok, an error code, provider_4xx/5xx).",
            ["route", "plan", "outcome"],
            registry=self.registry,
        )
        self.tokens = prometheus_client.Counter(
            "settings_gateway_tokens",
            "Tokens the provider reported in usage, by plan and kind (prompt, completion).",
            ["plan", "kind"],
            registry=self.registry,
        )
        self.overhead = prometheus_client.Histogram(
            "settings_gateway_overhead_seconds",
            "Time the gateway spent on a request besides waiting for the provider.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.reviews = prometheus_client.Counter(
            "settings_gateway_token_reviews",
            "TokenReviews sent (cluster mode), by outcome: authenticated, refused (401), "
            "failed (503: the API server unreachable, slow or refusing).",
            ["outcome"],
            registry=self.registry,
        )
        self.review_seconds = prometheus_client.Histogram(
            "settings_gateway_token_review_seconds",
            "Time a TokenReview took (cluster mode; a token's first request pays it).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.account_requests = prometheus_client.Counter(
            "settings_gateway_account_requests",
            "Requests per account (opt-in; accounts past the bound are counted as other).",
            ["account", "outcome"],
            registry=self.registry,
        )
        self.account_tokens = prometheus_client.Counter(
            "settings_gateway_account_tokens",
            "Tokens per account (opt-in, bounded as account_requests).",
            ["account", "kind"],
            registry=self.registry,
        )

    def account_label(self, account: str) -> str | None:
        """The label for ``account``, or None when per-account metrics are off."""
        if not self.accounts:
            return None
        if account in self._seen:
            return account
        with self._lock:
            if len(self._seen) < self.accounts:
                self._seen.add(account)
                return account
        return OTHER

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: ``labels()`` takes a lock and builds a key
        on every call, a tenth of the gateway's own time per request. The label values are
        bounded (see the module docstring), so is this cache."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, route: str, seconds: float) -> None:
        self._child(self.overhead, route).observe(seconds)

    def count(self, route: str, plan: str, outcome: str, account: str | None) -> None:
        self._child(self.requests, route, plan, outcome).inc()
        label = self.account_label(account) if account is not None else None
        if label is not None:
            self._child(self.account_requests, label, outcome).inc()

    def usage(self, plan: str, account: str | None, prompt: int, completion: int) -> None:
        for kind, value in (("prompt", prompt), ("completion", completion)):
            if value > 0:
                self._child(self.tokens, plan, kind).inc(value)
                label = self.account_label(account) if account is not None else None
                if label is not None:
                    self._child(self.account_tokens, label, kind).inc(value)

    def review(self, outcome: str, seconds: float) -> None:
        self._child(self.reviews, outcome).inc()
        self.review_seconds.observe(seconds)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
