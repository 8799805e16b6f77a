"""Connection checks, decided: which keys to check, what a provider's answer means, the verdict.

Pure: the provider calls live in ``controller.providers.connections``; this module turns a
global into check targets, an HTTP outcome into a reason, outcomes into the
``Connected`` verdict and into "is the service this account uses connected".
Which service an account depends on comes from the catalog (``usedWhen`` in
``x-credentials``), not from a list here.

Provider messages are never copied: an OpenAI 401 quotes part of the key
("Incorrect API key provided: sk-abc***xyz"). Messages are built from our own
words, the HTTP status and the endpoint without its userinfo or query;
``scrub`` is the last line of defence for any text that did come from outside.

A key the provider accepts is ``connected``; its reason keeps the published value
``Verified`` (``Reason.VERIFIED``), which alerts, dashboards and scripts match on.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller.core import catalog, credentials, declarations, merging

CONNECTED = "Connected"

# Default seconds between re-checks of a key that answered. Five minutes: a revoked
# key shows within the time a person takes to notice a failing workload, rotations
# and the annotation are checked at once anyway, and 3 keys x 12 calls an hour is
# nothing against any provider's rate limit (OpenAI's lowest tier allows 500 a minute).
DEFAULT_INTERVAL = 300.0
DEFAULT_TIMEOUT = 10.0  # seconds one connection check may take


class Reason(enum.StrEnum):
    VERIFIED = "Verified"
    INVALID_KEY = "InvalidKey"  # 401: the provider refused the key
    FORBIDDEN = "Forbidden"  # 403: the key is known but may not do this
    RATE_LIMITED = "RateLimited"  # 429: not a bad key; checked again later
    UNREACHABLE = "Unreachable"  # no TCP/TLS connection, DNS failure, proxy refused
    TIMEOUT = "Timeout"  # no full answer within the timeout
    PROVIDER_ERROR = "ProviderError"  # 5xx
    UNEXPECTED_RESPONSE = "UnexpectedResponse"  # another status, or a body of the wrong shape
    MISSING_KEY = "MissingKey"  # the Secret key is absent or empty
    CHECKING = "Checking"  # a key or endpoint changed; its check has not answered yet


# Outcomes that say nothing about the key: checked again sooner, with backoff.
TRANSIENT = frozenset(
    {Reason.RATE_LIMITED, Reason.UNREACHABLE, Reason.TIMEOUT, Reason.PROVIDER_ERROR}
)

_MESSAGES: Mapping[Reason, str] = {
    Reason.VERIFIED: "the provider accepted the key",
    Reason.INVALID_KEY: "the provider refused the key (revoked, mistyped or expired)",
    Reason.FORBIDDEN: "the provider knows the key but refuses it this request",
    Reason.RATE_LIMITED: "the provider is rate-limiting this key; this is not a bad key",
    Reason.UNREACHABLE: "no connection to the provider",
    Reason.TIMEOUT: "the provider did not answer in time",
    Reason.PROVIDER_ERROR: "the provider failed to answer (server error)",
    Reason.UNEXPECTED_RESPONSE: "the provider's answer is not what its API documents",
    Reason.MISSING_KEY: "the Secret key is missing or empty",
    Reason.CHECKING: "the key or endpoint changed; checking",
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One credential slot to check: where its key lives and which API to ask."""

    integration: str
    slot: str
    provider: str
    endpoint: str
    secret_name: str
    key: str

    @property
    def name(self) -> str:
        return f"{self.integration}.{self.slot}"


@dataclasses.dataclass(frozen=True)
class Outcome:
    target: Target
    reason: Reason
    latency: float  # seconds; 0 when no request was made
    checked_at: str  # RFC 3339
    status: int | None = None  # the HTTP status, when there was one
    retry_after: float | None = None  # seconds the provider asked us to wait
    detail: str = ""  # an exception class, or a provider's error code through provider_code

    @property
    def connected(self) -> bool:
        return self.reason is Reason.VERIFIED

    @property
    def message(self) -> str:
        where = printable_endpoint(self.target.endpoint)
        text = _MESSAGES[self.reason]
        if self.status is not None:
            text = f"HTTP {self.status} from {where}: {text}"
        elif self.reason is not Reason.MISSING_KEY:
            text = f"{where}: {text}"
        else:
            text = f"{self.target.secret_name}/{self.target.key}: {text}"
        if self.detail:
            text += f" ({self.detail})"
        return text

    def entry(self) -> dict[str, Any]:
        """The ``status.connections`` item (and the CLI's row)."""
        return {
            "integration": self.target.integration,
            "credential": self.target.slot,
            "provider": self.target.provider,
            "endpoint": printable_endpoint(self.target.endpoint),
            "connected": self.connected,
            "reason": self.reason.value,
            "message": self.message,
            "latencyMilliseconds": round(self.latency * 1000),
            "lastCheckTime": self.checked_at,
        }


def targets(cat: catalog.Catalog, global_: declarations.GlobalSettings) -> list[Target]:
    """Every key slot of the enabled integrations that a provider can check, in catalog order."""
    found = []
    for type_name, itype in cat.integrations.items():
        integration = global_.integrations.get(type_name)
        if integration is None or not integration.enabled:
            continue
        for slot_name, ref in integration.credentials.items():
            slot = itype.slots.get(slot_name)
            if slot is None or slot.provider is None:
                continue
            endpoint = ref.endpoint or cat.providers[slot.provider].endpoint
            found.append(
                Target(
                    type_name,
                    slot_name,
                    slot.provider,
                    endpoint.rstrip("/"),
                    ref.secret_name,
                    ref.key,
                )
            )
    return found


def reason_for_status(status: int) -> Reason:
    """What an HTTP status from a provider's authenticated call says about the key."""
    if 200 <= status < 300:
        return Reason.VERIFIED
    if status == 401:
        return Reason.INVALID_KEY
    if status == 403:
        return Reason.FORBIDDEN
    if status == 429:
        return Reason.RATE_LIMITED
    if status >= 500:
        return Reason.PROVIDER_ERROR
    return Reason.UNEXPECTED_RESPONSE


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (its delta-seconds form; an HTTP date is left to the backoff)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def next_delay(outcome: Outcome, failures: int, interval: float, base: float = 5.0) -> float:
    """Seconds until the next check of a slot: ``interval`` after a definite answer; after a
    transient one, exponential backoff from ``base`` (at least what Retry-After asked), never
    more than ``interval``."""
    if outcome.reason not in TRANSIENT:
        return interval
    delay = min(interval, base * 2.0 ** max(0, failures - 1))
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, interval))
    return delay


def printable_endpoint(url: str) -> str:
    """The endpoint's origin, ``scheme://host[:port]``: what may appear in a status, an Event, a
    log line or the CLI's output. A path, a query or userinfo can carry a secret (a gateway
    that takes the key in its path), so none is shown; the admission policy and the core
    refuse key-shaped ones anyway."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<endpoint that is not a URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host  # port 0 shown too
    origin = f"{parts.scheme}://{netloc}"
    return (
        "<endpoint that looks like a key>" if credentials.looks_like_key_value(origin) else origin
    )


_MASKED = re.compile(r"\S*\*{3,}\S*")  # "sk-abc***xyz": a provider quoting part of a key
_MIN_FRAGMENT = 4
# The promise: no run of this many characters of any key, anywhere the controller writes.
WINDOW = 8
REDACTED = "<redacted>"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every key, every run of ``WINDOW`` characters of a key (a middle fragment
    included), short prefixes and suffixes, and key-shaped words replaced by ``<redacted>``."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _windows_redacted(text, secrets)
    for secret in secrets:
        for size in range(min(len(secret) - 1, WINDOW - 1), _MIN_FRAGMENT - 1, -1):
            for fragment in (secret[:size], secret[-size:]):
                text = text.replace(fragment, REDACTED)
    text = _MASKED.sub(REDACTED, text)
    return " ".join(
        REDACTED if credentials.looks_like_key_value(word.strip(".,;:'\"()")) else word
        for word in text.split(" ")
    )


def _windows_redacted(text: str, secrets: Sequence[str]) -> str:
    """Every stretch of ``text`` covered by some ``WINDOW``-character run of a key, redacted."""
    windows = {s[i : i + WINDOW] for s in secrets for i in range(len(s) - WINDOW + 1)}
    if not windows or len(text) < WINDOW:
        return text
    covered = [False] * len(text)
    for i in range(len(text) - WINDOW + 1):
        if text[i : i + WINDOW] in windows:
            covered[i : i + WINDOW] = [True] * WINDOW
    if not any(covered):
        return text
    out: list[str] = []
    for i, char in enumerate(text):
        if not covered[i]:
            out.append(char)
        elif i == 0 or not covered[i - 1]:
            out.append(REDACTED)
    return "".join(out)


def leaks(text: str, secrets: Iterable[str]) -> bool:
    """Whether ``text`` holds a run of ``WINDOW`` characters of any key (a whole short key)."""
    for secret in secrets:
        if not secret:
            continue
        if len(secret) < WINDOW:
            if secret in text:
                return True
            continue
        if any(secret[i : i + WINDOW] in text for i in range(len(secret) - WINDOW + 1)):
            return True
    return False


# The condition's reason when several keys fail: the one a person must act on first.
_SEVERITY = (
    Reason.INVALID_KEY,
    Reason.FORBIDDEN,
    Reason.MISSING_KEY,
    Reason.UNEXPECTED_RESPONSE,
    Reason.UNREACHABLE,
    Reason.PROVIDER_ERROR,
    Reason.TIMEOUT,
    Reason.RATE_LIMITED,
)


# The shape of every provider code worth showing (OpenAI's ``invalid_api_key``,
# ``insufficient_quota``, ``rate_limit_exceeded``; Runware's ``invalidApiKey``): letters
# and separators only. No digits: a code may otherwise carry a key in pieces (7
# characters between separators) or case-folded, which no literal 8-run test sees.
_CODE = re.compile(r"[A-Za-z][A-Za-z_.-]{0,47}")
_SEPARATORS = re.compile(r"[^a-z0-9]")


def _folded(text: str) -> str:
    """``text`` lower-cased without separators: what a reader can still rebuild a key from."""
    return _SEPARATORS.sub("", text.lower())


def provider_code(value: Any, secrets: Iterable[str] = ()) -> str:
    """A provider's machine-readable error code (``invalid_api_key``, ``invalidApiKey``), fit to
    show: a short word of letters and ``_ . -``, with no run of ``WINDOW`` characters of any key
    in it even case-folded and with separators removed; else empty. The only provider text ever
    shown (the reason says what happened either way)."""
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        return ""
    secrets = [s for s in secrets if s]
    if any(value in s for s in secrets) or leaks(value, secrets) or scrub(value, secrets) != value:
        return ""
    folded = _folded(value)
    if leaks(folded, (f for f in map(_folded, secrets) if f)):
        return ""
    return value


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: str  # True | False | Unknown
    reason: str
    message: str


def verdict(checked: Sequence[Outcome]) -> Verdict:
    """The ``Connected`` condition: True only when the provider accepts every checked key."""
    if not checked:
        return Verdict("True", "NothingToCheck", "no enabled integration references a key")
    failed = [o for o in checked if not o.connected and o.reason is not Reason.CHECKING]
    if failed:
        worst = min(failed, key=lambda o: _SEVERITY.index(o.reason))
        return Verdict(
            "False",
            worst.reason.value,
            "; ".join(f"{o.target.name}: {o.reason.value}: {o.message}" for o in failed),
        )
    pending = [o for o in checked if o.reason is Reason.CHECKING]
    if pending:
        return Verdict(
            "Unknown",
            Reason.CHECKING.value,
            "checking " + ", ".join(o.target.name for o in pending),
        )
    return Verdict(
        "True",
        Reason.VERIFIED.value,
        f"all {len(checked)} keys verified: " + ", ".join(o.target.name for o in checked),
    )


def slots_used(cat: catalog.Catalog, effective: merging.EffectiveIntegration) -> tuple[str, ...]:
    """The checked key slots an integration's effective settings depend on (``usedWhen``)."""
    if not effective.enabled:
        return ()
    itype = cat.integrations[effective.type]
    return tuple(
        name
        for name, slot in itype.slots.items()
        if slot.provider is not None and slot.used_by(effective.values)
    )


def services_connected(
    cat: catalog.Catalog, result: merging.AccountResult, outcomes: Mapping[str, Outcome]
) -> dict[str, bool]:
    """Per enabled integration of an account: whether every key its settings use is connected.

    ``outcomes`` is keyed by ``Target.name``. An integration that uses no checked key is
    left out; a slot not checked yet counts as not connected.
    """
    found = {}
    for effective in result.integrations:
        used = slots_used(cat, effective)
        if used:
            found[effective.type] = all(
                (o := outcomes.get(f"{effective.type}.{slot}")) is not None and o.connected
                for slot in used
            )
    return found
