"""Property tests of the provider boundary: whatever the simulator answers, a round of checks
never raises, answers once per key within its timeout, and nothing it renders (the CLI's
table, JSON and YAML, the global's status, an Event, a log line) holds a run of 8 characters
of any key.

hypothesis draws, per key: the behaviour (every one ``simulator.BEHAVIOURS`` has), which
part of the key an echo repeats, chunk size, pauses, gzip or not, chunked or not, and the
key itself. Cases: ``$FUZZ_BUDGET // 50`` (``make fuzz``: 2,000), else 20 (a few seconds
in ``make test``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cluster import connections as cluster_connections
from controller.commands import connection
from controller.core import connections
from controller.providers import connections as provider_connections
from tests.providers import simulator

TIMEOUT = 0.3  # per check: stalls cost this much, so small
# What a round may take past it: four checks at once on two shared cores, the session's TLS
# context built, and the 50 ms its close leaves sockets to be released. 0.75 s failed once
# in a session where operator tests had just run beside it.
SLACK = 1.25
_COUNTER = itertools.count()


def _budget() -> int:
    raw = os.environ.get("FUZZ_BUDGET", "").strip()
    return max(20, int(raw) // 50) if raw else 20


KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
keys_ = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["sk-proj-", "sk-", "rw_", ""]),
    st.text(alphabet=KEY_ALPHABET, min_size=8, max_size=48),
)
answers = st.builds(
    simulator.Answer,
    behaviour=st.sampled_from(simulator.BEHAVIOURS) | st.just("ok"),
    echo=st.sampled_from(simulator.ECHOES),
    chunked=st.booleans(),
    gzip=st.booleans(),
    chunk_size=st.sampled_from([64, 1024, 4096, 1 << 16]),
    pause=st.sampled_from([0.0, 0.0, 0.0002, 0.001]),
    delay=st.sampled_from([0.0, 0.0, 0.05]),
    hang=st.just(TIMEOUT + 2.0),
)
PROVIDERS = ("openai", "runware")


@pytest.fixture(scope="module")
def sim() -> Iterator[simulator.Simulator]:
    with simulator.Simulator() as server:
        before = os.environ.get("SSL_CERT_FILE")
        os.environ.update(server.env())
        try:
            yield server
        finally:
            if before is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = before


def _rendered(outcomes: list[connections.Outcome]) -> str:
    """Everything the CLI prints and the operator writes for these outcomes."""
    entries = [o.entry() for o in outcomes]
    verdict = connections.verdict(outcomes)
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        connection._table(entries)
    status = {
        "conditions": [cluster_connections._condition(verdict, 1, [])],
        "connections": entries,
    }
    events = [f"{o.target.name}: {o.message}" for o in outcomes]
    return "\n".join(
        [
            table.getvalue(),
            json.dumps({"connected": verdict.status == "True", "connections": entries}),
            yaml.safe_dump({"connected": verdict.status == "True", "connections": entries}),
            json.dumps(status),
            *events,
            *(o.detail for o in outcomes),
        ]
    )


def test_fuzz_provider_answers_never_break_a_round(sim: simulator.Simulator) -> None:
    tally: dict[str, Any] = {"cases": 0, "keys": 0, "slowest": 0.0, "reasons": {}}

    @settings(
        max_examples=_budget(),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.tuples(st.sampled_from(PROVIDERS), keys_, answers), min_size=1, max_size=4))
    def check(drawn: list[tuple[str, str, simulator.Answer]]) -> None:
        targets, keyed = [], {}
        for provider, key, answer in drawn:
            key = f"{key}{next(_COUNTER):05d}"  # distinct keys, one answer each
            sim.answer(key, answer)
            target = connections.Target(
                "x", f"slot{len(targets)}", provider, getattr(sim, provider), "s", key
            )
            targets.append(target)
            keyed[target.slot] = key
        started = time.perf_counter()
        outcomes = asyncio.run(
            provider_connections.check_all(targets, lambda t: keyed[t.slot], timeout=TIMEOUT)
        )
        elapsed = time.perf_counter() - started
        # Four at most: one wave of checks, each bounded by the timeout.
        assert elapsed < TIMEOUT + max(a.delay for *_, a in drawn) + SLACK, elapsed
        assert [o.target for o in outcomes] == targets
        found = simulator.leaked(_rendered(outcomes), keyed.values())
        assert not found, (found, [o.entry() for o in outcomes])
        tally["cases"] += 1
        tally["keys"] += len(targets)
        tally["slowest"] = max(tally["slowest"], elapsed)
        for o in outcomes:
            tally["reasons"][o.reason.value] = tally["reasons"].get(o.reason.value, 0) + 1

    check()
    print(
        f"\nprovider fuzz: {tally['cases']} cases, {tally['keys']} keys, slowest round "
        f"{tally['slowest']:.2f}s (timeout {TIMEOUT}s); reasons {sorted(tally['reasons'].items())}"
    )
