"""File-mode benchmark: cold reconcile throughput and watch edit latency.

    python -m tests.bench.filemode [--sizes 10000,100000] [--edits 50] [--work DIR]

Prints a table and merges its numbers into tests/bench/results.json under
"filemode". Every throughput is also given as a ratio to a baseline measured
in the same run on the same filesystem: the raw rate at which this machine
writes the same output layout (a directory and three files per account, each
written to a temp file and renamed) with no logic at all, since that is the
floor under any file-mode output (``BASELINE`` says exactly what it does).

"no-change" is a second ``reconcile`` of the same tree into the same output
directory, as a new process: it must write nothing, and it is answered from
the record of the first (a stat of every file, no parse).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from typing import Any

from controller.files import reconciling
from tests.bench import generate

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = pathlib.Path(__file__).resolve().parent / "results.json"
CLI = pathlib.Path(sys.executable).parent / "settings-controller"


BASELINE = (
    "5,000 accounts into a fresh directory: per account os.mkdir and three 400-byte files, "
    "each os.open + os.write + os.close of a temp name then os.replace, on "
    f"{reconciling._WRITERS} threads of one process (the controller's writer threads); "
    "no parsing, rendering or record"
)


def baseline_accounts_per_second(directory: pathlib.Path, count: int = 5_000) -> float:
    """The floor under file mode: the same layout written with no logic at all.

    Per account a directory and three small files, each written to a temp file
    and renamed, on as many threads as the controller writes with.
    """
    root = pathlib.Path(tempfile.mkdtemp(dir=directory))
    payload = b"x" * 400

    def account(i: int) -> None:
        sub = root / f"a{i}"
        sub.mkdir()
        for name in ("integration-settings.yaml", "openai.json", "image_generation.json"):
            tmp = sub / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, payload)
            os.close(fd)
            os.replace(tmp, sub / name)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(reconciling._WRITERS) as pool:
        list(pool.map(account, range(count)))
    elapsed = time.perf_counter() - started
    shutil.rmtree(root)
    return count / elapsed


def cold_reconcile(n: int, work: pathlib.Path) -> dict[str, Any]:
    declarations = generate.generate(n, work / f"decl-{n}")
    out = work / f"out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "reconcile", str(declarations), "--output-dir", str(out)],
        capture_output=True,
        text=True,
    )
    cold = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    # Three passes with nothing changed: the first comes right after the cold
    # pass and checks the content of the files written in its last 2 s
    # (timestamps that close are not trusted); the median is the figure.
    passes = []
    for _ in range(3):
        started = time.perf_counter()
        again = subprocess.run(
            [str(CLI), "reconcile", str(declarations), "--output-dir", str(out)],
            capture_output=True,
            text=True,
        )
        passes.append(time.perf_counter() - started)
        assert again.returncode == 0 and f"0 written, {n} unchanged" in again.stderr, again.stderr[
            -2000:
        ]
        assert "nothing changed since the last complete pass" in again.stderr, again.stderr[-2000:]
    shutil.rmtree(out)
    return {
        "accounts": n,
        "cold_s": cold,
        "accounts_per_s": n / cold,
        "no_change_s": statistics.median(passes),
        "no_change_runs_s": passes,
    }


def watch_latency(n: int, edits: int, work: pathlib.Path) -> dict[str, Any]:
    declarations = generate.generate(n, work / f"decl-watch-{n}")
    out = work / f"out-watch-{n}"
    shutil.rmtree(out, ignore_errors=True)
    log = (work / "watch.log").open("w")
    process = subprocess.Popen(
        [str(CLI), "watch", str(declarations), "--output-dir", str(out)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: "start:" in (work / "watch.log").read_text(), 600)
        rng = random.Random(7)
        latencies = []
        for edit in range(edits):
            index = rng.randrange(n)
            model = generate.MODELS[edit % 2]  # alternate so every edit changes the output
            target = out / generate.account_name(index) / "openai.json"
            before = target.read_text()
            if json.loads(before)["model"] == model:
                model = generate.MODELS[(edit + 1) % 2]
            text = generate.account_text(index, random.Random(index), model=model, plan="pro")
            path = generate.account_path(declarations, index)
            started = time.perf_counter()
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)  # how editors and git write
            _wait(lambda t=target, m=model: json.loads(t.read_text())["model"] == m, 10)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    latencies.sort()
    return {
        "accounts": n,
        "edits": edits,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.001)
    raise TimeoutError("benchmark condition not reached")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--watch-accounts", type=int, default=10_000)
    parser.add_argument("--work", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="settings-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    base = baseline_accounts_per_second(work)
    print(f"baseline: {base:,.0f} accounts/s of raw output writes", file=sys.stderr)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "baseline_accounts_per_s": base,  # the first floor; each row has the two around it
        "baseline": BASELINE,
        "cold": [],
    }
    floors = [base]
    for n in (int(s) for s in args.sizes.split(",")):
        row = cold_reconcile(n, work)
        # The machine is shared and its speed drifts within minutes: each cold
        # pass is compared with the mean of the floors measured just before and
        # just after it.
        floors.append(baseline_accounts_per_second(work))
        row["baseline_accounts_per_s"] = (floors[-2] + floors[-1]) / 2
        row["ratio_to_baseline"] = row["accounts_per_s"] / row["baseline_accounts_per_s"]
        results["cold"].append(row)
        print(
            f"cold reconcile of {n:,} accounts: {row['cold_s']:.2f} s "
            f"({row['ratio_to_baseline']:.2f} of the baseline); no-change pass {row['no_change_s']:.2f} s",
            file=sys.stderr,
        )
    results["watch"] = watch_latency(args.watch_accounts, args.edits, work)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    print(f"file mode on {results['machine']}")
    print(f"baseline (raw writes of the same files, no logic): {base:,.0f} accounts/s")
    print(f"  = {BASELINE}")
    print(
        f"{'accounts':>9} {'cold s':>8} {'accounts/s':>11} {'vs baseline':>12} {'no-change s':>12}"
    )
    for row in results["cold"]:
        print(
            f"{row['accounts']:>9,} {row['cold_s']:>8.2f} {row['accounts_per_s']:>11,.0f} "
            f"{row['ratio_to_baseline']:>12.2f} {row['no_change_s']:>12.2f}"
        )
    w = results["watch"]
    print(
        f"watch, {w['accounts']:,} accounts, {w['edits']} edits: p50 {w['p50_ms']:.1f} ms, "
        f"p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms"
    )

    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged["filemode"] = results
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
