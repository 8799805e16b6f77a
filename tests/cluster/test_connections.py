"""The operator's connection checks (``controller.cluster.connections.ConnectionChecker``)
against the provider simulator, without a control plane: a recording writer stands for the API server.

A hostile answer to one key costs that key its row only; a round that fails anyway still
answers for every key; the annotation re-checks every key; no 8-character run of any key
reaches a status, an Event or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from controller.cluster import connections, metrics, reconciling
from controller.cluster.runtime import records, resources, secrets
from controller.core import catalog as catalog_
from controller.core import connections as core_connections
from controller.providers import connections as provider_connections
from tests.cluster import fakes
from tests.connections import conftest as connections_conftest
from tests.harness.fixtures import until_async
from tests.providers import simulator

# Seconds between two looks of until_async().
POLL = 0.02

GOOD = {
    "openai": "sk-proj-verifier-good-openai-AbCdEfGh0123",
    "dalle": "sk-proj-verifier-good-dalle-BcDeFgHi1234",
    "runware": "rwVerifierGoodRunwareCdEfGhIj2345",
}


def _connections(writer: fakes.RecordingWriter) -> dict[str, str]:
    """The latest status.connections of the global: target name -> reason."""
    for _, _, status in reversed(writer.statuses):
        if "connections" in status:
            return {
                f"{e['integration']}.{e['credential']}": e["reason"] for e in status["connections"]
            }
    return {}


class Round:
    def __init__(self, catalog: catalog_.Catalog, sim: simulator.Simulator) -> None:
        self.catalog, self.sim = catalog, sim
        self.writer = fakes.RecordingWriter()
        self.store = secrets.SecretStore()
        observe = functools.partial(records.observe, catalog)
        self.globals = resources.Resources(catalog_.GLOBAL, observe)
        self.views = reconciling.Views(
            globals=self.globals.named,
            accounts={},
            tenants={},
            overrides={},
            configmaps={},
            secrets={},
        )
        self.declare()
        self.keys(GOOD)
        self.checker = connections.ConnectionChecker(
            catalog, self.writer, self.store, self.views, metrics.Metrics(), 300.0, 2.0
        )

    def declare(self, annotation: str | None = None) -> None:
        body = connections_conftest.global_body(connections_conftest.local_endpoints(self.sim))
        body["metadata"] = {"name": "default", "uid": "g", "generation": 1}
        if annotation:
            body["metadata"]["annotations"] = {connections.ANNOTATION: annotation}
        self.globals.replace([records.observe(self.catalog, body)])

    def keys(self, values: Mapping[str, str]) -> None:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        self.store.replace([{"metadata": {"name": "platform-api-keys"}, "data": data}])

    def seen(self) -> None:
        self.checker.global_seen(self.views.globals["default"])

    async def close(self) -> None:
        """The checker closed, having sent statuses and Events only."""
        await self.checker.close()
        w = self.writer
        assert not (w.applied or w.deleted or w.unlabelled or w.removed_keys), (
            "the connection checker writes statuses and Events only"
        )


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> Any:
    with simulator.Simulator() as sim:
        for name, value in sim.env().items():
            monkeypatch.setenv(name, value)
        yield sim


def test_a_hostile_answer_costs_one_key_and_the_annotation_rechecks_every_key(
    catalog: catalog_.Catalog, trusted: simulator.Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    # Break 2 of issue 20 in the operator: a 200 of "[" x 5000 raised out of the round, every
    # key stayed unreported until the next interval, and the annotation re-checked nothing.
    hostile = {**GOOD, "dalle": "sk-proj-verifier-deep-json-DdEeFfGg3456"}
    trusted.answer(hostile["dalle"], simulator.Answer("deep_json"))
    caplog.set_level(logging.INFO)

    async def main() -> None:
        r = Round(catalog, trusted)
        r.keys(hostile)
        r.seen()
        task = asyncio.create_task(r.checker.run())
        try:
            await until_async(
                lambda: len(_connections(r.writer)) == 3, "a row for every key", 10.0, POLL
            )
            assert _connections(r.writer) == {
                "image_generation.dalle": "UnexpectedResponse",
                "image_generation.runware": "Verified",
                "openai.apiKey": "Verified",
            }
            before = len(trusted.received)
            r.declare(annotation="1")
            r.seen()
            await until_async(
                lambda: len(trusted.received) >= before + 3,
                "the three keys checked again",
                5.0,
                POLL,
            )
            assert sorted(trusted.received_keys()[before:]) == sorted(hostile.values())
        finally:
            task.cancel()
            await r.close()

    asyncio.run(main())
    assert "Traceback" not in caplog.text


def test_a_round_that_raises_anyway_still_answers_for_every_key(
    catalog: catalog_.Catalog,
    trusted: simulator.Simulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Defence in depth: should check_all itself raise, every key gets a row (not "Checking"
    # until the next interval), and the exception's text (which could hold what a provider
    # sent) is not logged.
    async def broken(*args: Any, **kwargs: Any) -> list[core_connections.Outcome]:
        raise RecursionError(GOOD["openai"])

    monkeypatch.setattr(provider_connections, "check_all", broken)
    caplog.set_level(logging.INFO)

    async def main() -> fakes.RecordingWriter:
        r = Round(catalog, trusted)
        r.seen()
        task = asyncio.create_task(r.checker.run())
        try:
            await until_async(
                lambda: len(_connections(r.writer)) == 3, "a row for every key", 10.0, POLL
            )
        finally:
            task.cancel()
            await r.close()
        return r.writer

    writer = asyncio.run(main())
    assert set(_connections(writer).values()) == {"UnexpectedResponse"}
    said = writer.dump() + caplog.text
    assert "check failed: RecursionError" in said
    assert not simulator.leaked(said, GOOD.values())


@pytest.mark.parametrize("echo", simulator.ECHOES)
def test_no_8_character_run_of_an_echoed_key_in_statuses_events_or_logs(
    catalog: catalog_.Catalog,
    trusted: simulator.Simulator,
    caplog: pytest.LogCaptureFixture,
    echo: str,
) -> None:
    # Break 3 of issue 20 in the operator: a middle fragment in the provider's error code
    # reached status.connections, the Warning Event and the log line.
    echoing = {
        "openai": f"sk-proj-verifier-{echo}-code-AbCdEfGhIjKlMnOpQrSt0123",
        "dalle": f"sk-proj-verifier-{echo}-body-BcDeFgHiJkLmNoPqRsTu1234",
        "runware": f"rwVerifier{echo}HeaderCdEfGhIjKlMnOpQrStUv2345",
    }
    trusted.answer(echoing["openai"], simulator.Answer("echo_code", echo=echo))
    trusted.answer(echoing["dalle"], simulator.Answer("echo_body", echo=echo))
    trusted.answer(echoing["runware"], simulator.Answer("echo_header", echo=echo))
    caplog.set_level(logging.DEBUG)

    async def main() -> fakes.RecordingWriter:
        r = Round(catalog, trusted)
        r.keys(echoing)
        r.seen()
        task = asyncio.create_task(r.checker.run())
        try:
            await until_async(lambda: len(r.writer.events) == 3, "three Events", 10.0, POLL)
        finally:
            task.cancel()
            await r.close()
        return r.writer

    writer = asyncio.run(main())
    assert set(_connections(writer).values()) == {"InvalidKey"}
    said = writer.dump() + caplog.text
    assert not simulator.leaked(said, echoing.values())


def _series(r: Round) -> dict[str, float]:
    """Every ``settings_controller_connected`` and per-reason check series, by labels."""
    out = {}
    for metric in (r.checker.meter.connected, r.checker.meter.connection_checks):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                out[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return out


def test_a_removed_credential_leaves_no_series_even_mid_check(
    catalog: catalog_.Catalog, trusted: simulator.Simulator
) -> None:
    # Breakit2: a failing key removed from the global kept settings_controller_connected 0
    # (SettingsControllerKeyNotConnected firing for ever) until a restart.
    failing = {**GOOD, "runware": "rwVerifierFailingRunwareDdEeFf3456"}
    trusted.answer(failing["runware"], simulator.Answer("deep_json"))

    async def main() -> None:
        r = Round(catalog, trusted)
        r.keys(failing)
        r.seen()
        task = asyncio.create_task(r.checker.run())
        try:
            await until_async(
                lambda: len(_connections(r.writer)) == 3, "a row for every key", 10.0, POLL
            )
            assert any("runware" in k and v == 0 for k, v in _series(r).items()), _series(r)
            body = connections_conftest.global_body(connections_conftest.local_endpoints(trusted))
            del body["spec"]["integrations"]["image_generation"]["credentials"]["runware"]
            body["metadata"] = {"name": "default", "uid": "g", "generation": 2}
            r.globals.replace([records.observe(catalog, body)])
            r.seen()
            await until_async(
                lambda: "image_generation.runware" not in _connections(r.writer),
                "no row for runware",
                10.0,
                POLL,
            )
            assert [k for k in _series(r) if "runware" in k] == []
            assert any("dalle" in k for k in _series(r))  # the others' series stay
            r.globals.replace([])  # the whole global deleted
            r.checker.refresh()
            assert [k for k in _series(r) if "credential" in k] == [], _series(r)
        finally:
            task.cancel()
            await r.close()

    asyncio.run(main())


def test_rechecks_are_requeues_of_each_credential_on_the_checks_queue(
    catalog: catalog_.Catalog, trusted: simulator.Simulator
) -> None:
    """No timer of its own: each credential's ``sync`` returns ``requeue_after`` (the
    interval), the queue brings it back; a rotated key is checked now, not at its old
    time; the results are counted under controller="connection-checks"."""

    async def main() -> None:
        r = Round(catalog, trusted)
        meter = metrics.Metrics()
        await r.checker.close()  # the Round's, at the default interval
        r.checker = connections.ConnectionChecker(
            catalog, r.writer, r.store, r.views, meter, interval=0.5, timeout=2.0
        )
        r.seen()
        assert sorted(map(str, r.checker.queue.pending)) == sorted(
            ["the global's Connected status", *core_names(r)]
        )
        task = asyncio.create_task(r.checker.run())
        try:
            await until_async(
                lambda: len(_connections(r.writer)) == 3, "a row for every key", 10.0, POLL
            )
            first = len(trusted.received)
            await until_async(
                lambda: r.checker.queue.waiting == 3,
                "each credential waiting for its requeue",
                2.0,
                POLL,
            )
            await until_async(
                lambda: len(trusted.received) >= first + 3, "the three rechecks", 2.0, POLL
            )  # ~0.5 s later
            # A rotated key: checked at once, whatever it waited for.
            rotated = {**GOOD, "openai": "sk-proj-verifier-rotated-openai-ZyXw9876"}
            await until_async(
                lambda: r.checker.queue.waiting == 3,
                "each credential waiting for its requeue",
                2.0,
                POLL,
            )
            before = len(trusted.received)
            r.keys(rotated)
            r.checker.refresh()
            await until_async(
                lambda: len(trusted.received) > before, "the rotated key checked", 0.4, POLL
            )
            assert trusted.received_keys()[before] == rotated["openai"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await r.close()
        total = "controller_runtime_reconcile_total"
        requeued = meter.registry.get_sample_value(
            total, {"controller": "connection-checks", "result": "requeue_after"}
        )
        assert requeued is not None and requeued >= 6

    def core_names(r: Round) -> list[str]:
        _, decl = r.checker._global()
        assert decl is not None
        return [t.name for t in core_connections.targets(catalog, decl)]

    asyncio.run(main())
