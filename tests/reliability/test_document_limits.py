"""Worst-case documents: each is refused (or loaded) within bounded time and memory.

The limits live in controller/files/documents.py (MAX_FILE_BYTES, MAX_NODES,
MAX_DEPTH). For each worst case the test measures wall time and the peak of
Python allocations (tracemalloc) of ``loading.load_text`` and records both.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import tracemalloc
from collections.abc import Callable

import pytest

from controller import schemafiles
from controller.files import documents, loading
from tests.conftest import CLI
from tests.reliability.conftest import Figures

CATALOG = schemafiles.load_catalog()

MAX_SECONDS = 20.0  # per document, on a shared 2-core machine (measured: under 6 s)
MAX_PEAK_MIB = 512.0


def _bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _just_under_node_limit() -> str:
    """A valid global with ~MAX_NODES values: the largest document that is accepted."""
    items = [f"      m{i}: v{i}" for i in range((documents.MAX_NODES - 200) // 2)]
    return (
        "apiVersion: integrations.igny8.com/v1alpha1\n"
        "kind: IntegrationSettings\n"
        "metadata: {name: openai, namespace: acct-1}\n"
        "spec:\n  overrides:\n    model: gpt-4o\n    sizes:\n" + "\n".join(items) + "\n"
    )


def _many_documents() -> str:
    doc = (
        "apiVersion: integrations.igny8.com/v1alpha1\nkind: Account\n"
        "metadata: {name: a%d}\nspec: {plan: pro, namespace: a%d}\n"
    )
    out, size, i = [], 0, 0
    while size < documents.MAX_FILE_BYTES - 200:
        part = doc % (i, i)
        out.append(part)
        size += len(part) + 4
        i += 1
    return "---\n".join(out)


CASES: list[tuple[str, Callable[[], str], str | None]] = [
    ("billion laughs (9 levels x 9)", lambda: _bomb(9, 9), "counting alias expansions"),
    ("wide alias bomb (3 levels x 1000)", lambda: _bomb(3, 1000), "counting alias expansions"),
    (
        "deep flow sequence (100,000 levels)",
        lambda: "a: " + "[" * 100_000 + "]" * 100_000,
        "deeper",
    ),
    (
        "deep flow mapping (10,000 levels)",
        lambda: "a: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        "deeper",
    ),
    (
        "deep block mapping (2,000 levels)",
        lambda: "".join(" " * i + "a:\n" for i in range(2_000)),
        "deeper",
    ),
    ("file over MAX_FILE_BYTES", lambda: "#" * (documents.MAX_FILE_BYTES + 1), "larger than"),
    ("one 4 MiB scalar", lambda: "a: " + "x" * (documents.MAX_FILE_BYTES - 10), None),
    ("MAX_NODES values in one document", _just_under_node_limit, None),
    ("4 MiB of small documents", _many_documents, None),
    ("MAX_NODES + 1 values", lambda: "a: [" + "1," * documents.MAX_NODES + "1]", "more than"),
    (
        "control characters",
        lambda: 'kind: Account\nmetadata: {name: "a\x07\x00b"}\n',
        "invalid YAML",
    ),
]


@pytest.mark.parametrize(("label", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_worst_case_document_is_bounded(
    label: str, make: Callable[[], str], expected: str | None, figures: Figures
) -> None:
    text = make()
    started = time.perf_counter()
    loaded = loading.load_text(CATALOG, "worst.yaml", text)
    elapsed = time.perf_counter() - started
    tracemalloc.start()  # a second run for memory: tracemalloc slows allocation down
    try:
        loading.load_text(CATALOG, "worst.yaml", text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak_mib = peak / 2**20
    figures["input"] = f"{len(text):,} chars"
    figures["seconds"] = round(elapsed, 3)
    figures["peak MiB (tracemalloc)"] = round(peak_mib, 1)
    assert elapsed < MAX_SECONDS, f"{label}: {elapsed:.1f}s"
    assert peak_mib < MAX_PEAK_MIB, f"{label}: {peak_mib:.0f} MiB"
    if expected is None:
        for e in loaded.errors:
            # Accepted as YAML; any error is a schema one, located.
            assert e.reason.value != "InvalidYAML", e.message
    else:
        assert len(loaded.errors) == 1, [e.message for e in loaded.errors]
        error = loaded.errors[0]
        assert expected in error.message, error.message
        assert isinstance(error.source, loading.DocRef) and error.source.line >= 1
        figures["message"] = f"worst.yaml:{error.source.line}: {error.message}"


def test_cli_reports_a_bomb_with_file_and_line(tmp_path: object, cli: object) -> None:
    import pathlib

    root = pathlib.Path(str(tmp_path)) / "decls"
    root.mkdir()
    (root / "bomb.yaml").write_text(_bomb(12, 12))
    run = cli  # the installed CLI, as a user runs it
    proc = run("validate", root)  # type: ignore[operator]
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "bomb.yaml:" in proc.stdout + proc.stderr
    json.dumps(proc.stdout)


HOSTILE_FILES: dict[str, bytes] = {
    "bomb.yaml": _bomb(12, 12).encode(),
    "deep-flow.yaml": b"a: " + b"[" * 50_000 + b"]" * 50_000,
    "deep-block.yaml": "".join(" " * i + "a:\n" for i in range(500)).encode(),
    "nul.yaml": b"kind: Account\x00\nmetadata: {}\n",
    "latin1.yaml": b"kind: Account\nmetadata: {name: caf\xe9}\n",
    "binary.yaml": bytes(range(256)) * 4,
    "nan.yaml": b"apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
    b"metadata: {name: openai, namespace: a}\nspec: {overrides: {temperature: .nan}}\n",
    "dupkeys.yaml": b"kind: Account\nkind: Account\n",
    "python-tag.yaml": b"kind: !!python/object/apply:os.system ['true']\n",
    "null-integrations.yaml": b"apiVersion: integrations.igny8.com/v1alpha1\n"
    b"kind: GlobalIntegrationSettings\nmetadata: {name: default}\n"
    b"spec: {plans: {}, integrations: null}\n",
    "wrong-block.yaml": b"apiVersion: integrations.igny8.com/v1alpha1\n"
    b"kind: GlobalIntegrationSettings\nmetadata: {name: default}\n"
    b"spec: {plans: {}, integrations: {openai: 7}}\n",
    "bidi-name.yaml": "apiVersion: integrations.igny8.com/v1alpha1\nkind: Account\n"
    'metadata: {name: "acct\u202e-evil"}\nspec: {plan: pro, namespace: x}\n'.encode(),
    "huge-int.yaml": b"apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
    b"metadata: {name: openai, namespace: a}\nspec: {overrides: {max_tokens: "
    + b"9" * 5000
    + b"}}\n",
}


def test_cli_never_shows_a_traceback(tmp_path: object, cli: object, figures: Figures) -> None:
    """Every hostile file through validate, reconcile and get: exit 1, file:line, no traceback."""
    import pathlib

    root = pathlib.Path(str(tmp_path)) / "decls"
    root.mkdir()
    for name, data in HOSTILE_FILES.items():
        (root / name).write_bytes(data)
    run = cli
    commands = (
        ("validate", root),
        ("validate", "-o", "json", root),
        ("reconcile", root, "--output-dir", pathlib.Path(str(tmp_path)) / "out"),
        ("get", "acct-1", "-d", root),
    )
    for args in commands:
        proc = run(*args)  # type: ignore[operator]
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, text)
        assert "Traceback" not in text, (args, text)
    log = pathlib.Path(str(tmp_path)) / "watch.log"
    with log.open("wb") as fh:
        watch = subprocess.Popen(
            [str(CLI), "watch", str(root), "--output-dir", str(pathlib.Path(str(tmp_path)) / "w")],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "start:" not in log.read_text(errors="replace"):
            assert watch.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "watch did not finish its first pass"
            time.sleep(0.1)
        (root / "later.yaml").write_bytes(HOSTILE_FILES["deep-flow.yaml"])
        time.sleep(1.0)
        assert watch.poll() is None, log.read_text(errors="replace")
    finally:
        watch.terminate()
        watch.wait(15)
    assert "Traceback" not in log.read_text(errors="replace")
    assert "later.yaml:1: error" in log.read_text(errors="replace")
    report = run("validate", root).stdout + run("validate", root).stderr  # type: ignore[operator]
    for name in HOSTILE_FILES:
        assert re.search(rf"{re.escape(name)}:\d+: error", report), (name, report)
    figures["hostile files"] = len(HOSTILE_FILES)
    figures["commands"] = len(commands) + 1  # and a watch fed one more
    figures["tracebacks"] = 0
