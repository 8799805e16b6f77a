"""Events aggregated and rate-limited per object (``correlating``), client-go's semantics."""

from __future__ import annotations

from controller.cluster.runtime import correlating

ACCOUNT = {"kind": "Account", "name": "acct-1", "uid": "u1", "apiVersion": "x/v1"}
OTHER = {**ACCOUNT, "name": "acct-2", "uid": "u2"}


def _run(
    c: correlating.Correlator, messages: list[str], start: float = 0.0, step: float = 0.1
) -> list[correlating.Write | None]:
    return [
        c.correlate(ACCOUNT, "Warning", "UnknownPlan", m, start + i * step)
        for i, m in enumerate(messages)
    ]


def test_150_distinct_warnings_make_at_most_burst_writes_and_ten_events() -> None:
    c = correlating.Correlator()
    writes = _run(c, [f"plan 'p{i}' is not declared" for i in range(150)])
    done = [w for w in writes if w is not None]
    assert len(done) == correlating.BURST
    created = [w for w in done if w.create]
    # Nine messages of their own, then one combined Event.
    assert len(created) == correlating.MAX_SIMILAR
    assert created[-1].message == correlating.COMBINED + "plan 'p9' is not declared"
    # The counts on the server add up to the writes that reached it.
    last = {w.name: w.count for w in done}
    assert sum(last.values()) == correlating.BURST
    assert c.suppressed == 150 - correlating.BURST


def test_an_identical_event_patches_the_count_of_its_event() -> None:
    c = correlating.Correlator()
    a, b, again = _run(c, ["A", "B", "A"])
    assert a is not None and b is not None and again is not None
    assert a.create and b.create and not again.create
    assert again.name == a.name and again.count == 2


def test_the_bucket_refills_one_every_five_minutes_and_keeps_the_count() -> None:
    c = correlating.Correlator()
    _run(c, ["same"] * 40)  # 25 written, 15 suppressed
    assert c.correlate(ACCOUNT, "Warning", "UnknownPlan", "same", 10.0) is None
    later = c.correlate(ACCOUNT, "Warning", "UnknownPlan", "same", 10.0 + 300.0)
    assert later is not None and not later.create
    assert later.count == 42  # the suppressed occurrences are carried, none lost
    assert c.correlate(ACCOUNT, "Warning", "UnknownPlan", "same", 311.0) is None


def test_buckets_are_per_object() -> None:
    c = correlating.Correlator()
    _run(c, [f"m{i}" for i in range(30)])
    other = c.correlate(OTHER, "Warning", "UnknownPlan", "m0", 5.0)
    assert other is not None and other.create


def test_memory_is_bounded_whatever_the_churn() -> None:
    c = correlating.Correlator(size=100)
    for i in range(5000):
        c.correlate({**ACCOUNT, "name": f"a{i}", "uid": str(i)}, "Warning", "R", "m", float(i))
    assert len(c) <= 300
