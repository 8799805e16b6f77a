"""The gateway's cost: direct-to-simulator against through-the-gateway, in the same run.

    python -m tests.bench.gateway [--rates 100,500,1000] [--seconds 5] [--concurrency 64]

The provider simulator (plain HTTP on loopback, no pause, no gzip: its own cost as small
and steady as it gets) runs in a process of its own, the gateway as users run it
(``settings-controller gateway`` in local mode, one account, one token), and the load
generator (aiohttp, open loop: request i is sent at ``start + i / rate`` whatever the
answers before it did) in this process. For each kind (a chat completion; a streamed one
of 10 events, written back to back) and each fixed rate it sends the same load straight to the
simulator and then through the gateway, and reports:

- p50/p99 latency of each, and the gateway's **added** p50/p99 (through minus direct);
  for streams, the added time to first byte (TTFB) as well;
- the gateway's CPU per request (its process's user + system time over the requests) and
  its RSS at the end of the step;
- the gateway's own time as it measures it (``settings_gateway_overhead_seconds``, the
  time it spent besides waiting for the provider), p50/p99 interpolated in its buckets.

At saturation (``--concurrency`` requests always in flight, closed loop) it reports the
throughput of each path, and then the gateway's throughput and p50/p99 at saturation with
one replica and with two (a second gateway process on the same declarations, the load
generator spreading its workers over both), and their ratio. Numbers are merged into tests/bench/results.json under
"gateway". On the shared 2-core machine the load generator, the simulator and the
gateway compete for the same cores, so the added latency includes some of that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import aiohttp
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = pathlib.Path(__file__).resolve().parent / "results.json"
CLI = pathlib.Path(sys.executable).parent / "settings-controller"
KEY = "sk-proj-benchPlatformKey0123456789AbCdEfGhIjKl"
TOKEN = "tok-bench-QmVuY2g"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello to the bench"}]}
STREAM_EVENTS = 10

SIMULATOR = f"""
import sys, threading
from tests.providers import simulator
with simulator.Simulator(tls=False) as sim:
    sim.answer({KEY!r}, simulator.Answer(pause=0.0, gzip=False, chunked=False,
                                        stream_chunks={STREAM_EVENTS}, )
    )
    print(sim.openai, flush=True)
    sys.stdin.read()
"""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Process:
    def __init__(self, args: list[str], pattern: str, **kwargs: Any) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,
        )
        self.lines: list[str] = []
        found = threading.Event()
        self.match: re.Match[str] | None = None

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if self.match is None and (m := re.search(pattern, line)):
                    self.match = m
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60) or self.match is None:
            self.stop()
            raise RuntimeError("did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class _Gateway(_Process):
    """``settings-controller gateway`` in local mode, as users run it."""

    def __init__(self, declarations: pathlib.Path, tokens: pathlib.Path, keys: pathlib.Path):
        super().__init__(
            [
                str(CLI),
                "gateway",
                "--declarations",
                str(declarations),
                "--tokens",
                str(tokens),
                "--keys-dir",
                str(keys),
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--max-connections",
                "1000",
            ],
            r"metrics at http://127\.0\.0\.1:(\d+)/metrics",
        )
        port = next(
            int(m.group(1))
            for line in self.lines
            if (m := re.search(r"serving http://127\.0\.0\.1:(\d+)/v1", line))
        )
        assert self.match is not None
        self.metrics_url = f"http://127.0.0.1:{self.match.group(1)}/metrics"
        self.chat_url = f"http://127.0.0.1:{port}/v1/chat/completions"


def _world(root: pathlib.Path, openai_url: str) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    declarations = root / "declarations"
    (declarations / "accounts").mkdir(parents=True)
    body = yaml.safe_load((REPO / "examples" / "global.yaml").read_text())
    for block in body["spec"]["integrations"].values():
        for ref in block["credentials"].values():
            ref["endpoint"] = openai_url
    (declarations / "global.yaml").write_text(yaml.safe_dump(body))
    shutil.copy(REPO / "examples" / "accounts" / "acct-789.yaml", declarations / "accounts")
    tokens = root / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({TOKEN: "acct-789"}))
    keys = root / "keys"
    keys.mkdir()
    (keys / "openai").write_text(KEY)
    return declarations, tokens, keys


async def _one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool
) -> tuple[float, float, bool]:
    body = {**BODY, "stream": True} if stream else BODY
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, json=body, headers=headers) as answer:
        async for _ in answer.content.iter_any():
            if not first:
                first = time.perf_counter() - started
        ok = answer.status == 200
    return time.perf_counter() - started, first, ok


async def _fixed_rate(
    url: str, headers: dict[str, str], stream: bool, rate: int, seconds: float
) -> dict[str, Any]:
    total = int(rate * seconds)
    latencies: list[float] = []
    ttfbs: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _one(session, url, headers, stream)  # warm the connection and caches

        async def timed() -> None:
            nonlocal failed
            try:
                latency, first, ok = await _one(session, url, headers, stream)
            except aiohttp.ClientError:
                failed += 1
                return
            if not ok:
                failed += 1
            latencies.append(latency)
            ttfbs.append(first)

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed()))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
    return {
        "requests": total,
        "failed": failed,
        "achieved_rps": round(total / took, 1),
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "ttfb_p50_ms": _percentile(ttfbs, 0.50) * 1000,
        "ttfb_p99_ms": _percentile(ttfbs, 0.99) * 1000,
    }


async def _saturate(
    url: str | list[str], headers: dict[str, str], stream: bool, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Closed loop; with several URLs (replicas) worker i sends to URL i mod n, so the
    load is spread evenly, as a Service spreads connections."""
    urls = [url] if isinstance(url, str) else url
    done = failed = 0
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def worker(target: str) -> None:
            nonlocal done, failed
            while time.perf_counter() < deadline:
                try:
                    latency, _, ok = await _one(session, target, headers, stream)
                except aiohttp.ClientError:
                    failed += 1
                    continue
                done += 1
                failed += not ok
                latencies.append(latency)

        start = time.perf_counter()
        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
        took = time.perf_counter() - start
    return {
        "requests": done,
        "failed": failed,
        "rps": round(done / took, 1),
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
    }


def _overhead(
    metrics_url: str, before: dict[float, float]
) -> tuple[dict[float, float], float, float]:
    """The gateway's own-time histogram (chat route), cumulative by bucket, and the p50/p99
    of what was added since ``before``, interpolated linearly inside a bucket."""
    text = asyncio.run(_get(metrics_url))
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        m = re.match(
            r'settings_gateway_overhead_seconds_bucket\{le="([^"]+)",route="chat"\} (\S+)', line
        )
        if m:
            buckets[float(m.group(1))] = float(m.group(2))
    delta = {le: count - before.get(le, 0.0) for le, count in sorted(buckets.items())}

    def quantile(q: float) -> float:
        total = delta.get(float("inf"), 0.0)
        if not total:
            return float("nan")
        rank, low, below = q * total, 0.0, 0.0
        for le, count in sorted(delta.items()):
            if count >= rank:
                if le == float("inf"):
                    return low
                share = (rank - below) / (count - below) if count > below else 1.0
                return low + (le - low) * share
            low, below = le, count
        return low

    return buckets, quantile(0.5) * 1000, quantile(0.99) * 1000


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return await answer.text()


def run(rates: list[int], seconds: float, concurrency: int) -> dict[str, Any]:
    sim = _Process(
        [sys.executable, "-c", SIMULATOR], r"(http://127\.0\.0\.1:\d+/openai/v1)", cwd=REPO
    )
    assert sim.match is not None
    openai_url = sim.match.group(1)
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    world = _world(root, openai_url)
    gateway = _Gateway(*world)
    metrics_url = gateway.metrics_url
    direct = (f"{openai_url}/chat/completions", {"Authorization": f"Bearer {KEY}"})
    through = (gateway.chat_url, {"Authorization": f"Bearer {TOKEN}"})
    pid = gateway.proc.pid
    results: dict[str, Any] = {"rates": [], "saturation": [], "replicas": [], "seconds": seconds}
    second: _Gateway | None = None
    try:
        for stream in (False, True):
            kind = "stream" if stream else "chat"
            for rate in rates:
                d = asyncio.run(_fixed_rate(*direct, stream, rate, seconds))
                before, _, _ = _overhead(metrics_url, {})
                cpu = _cpu_seconds(pid)
                t = asyncio.run(_fixed_rate(*through, stream, rate, seconds))
                cpu = _cpu_seconds(pid) - cpu
                _, own50, own99 = _overhead(metrics_url, before)
                row = {
                    "kind": kind,
                    "rate": rate,
                    "direct": d,
                    "through": t,
                    "added_p50_ms": t["p50_ms"] - d["p50_ms"],
                    "added_p99_ms": t["p99_ms"] - d["p99_ms"],
                    "added_ttfb_p50_ms": t["ttfb_p50_ms"] - d["ttfb_p50_ms"],
                    "gateway_own_p50_ms": own50,
                    "gateway_own_p99_ms": own99,
                    "cpu_ms_per_request": cpu * 1000 / max(t["requests"], 1),
                    "rss_mib": _rss_mib(pid),
                }
                results["rates"].append(row)
                _print_row(row)
            d = asyncio.run(_saturate(*direct, stream, concurrency, seconds))
            t = asyncio.run(_saturate(*through, stream, concurrency, seconds))
            row = {"kind": kind, "concurrency": concurrency, "direct": d, "through": t}
            results["saturation"].append(row)
            print(
                f"saturation {kind:6} x{concurrency}: direct {d['rps']:7.0f} req/s, "
                f"through {t['rps']:7.0f} req/s ({t['failed']} failed)",
                flush=True,
            )
        # Stateless replicas: the same chat load at saturation through one gateway process,
        # then spread over two (each its own process, as two pods), on the same cores.
        second = _Gateway(*world)
        for replicas in (1, 2):
            urls = [gateway.chat_url, second.chat_url][:replicas]
            t = asyncio.run(_saturate(urls, through[1], False, concurrency, seconds))
            results["replicas"].append({"replicas": replicas, "concurrency": concurrency, **t})
            print(
                f"replicas {replicas} x{concurrency}: {t['rps']:7.0f} req/s, p50 "
                f"{t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms ({t['failed']} failed)",
                flush=True,
            )
        one, two = results["replicas"]
        results["replicas_throughput_ratio"] = round(two["rps"] / max(one["rps"], 1e-9), 2)
        print(f"2 replicas / 1: x{results['replicas_throughput_ratio']} throughput", flush=True)
    finally:
        if second is not None:
            second.stop()
        gateway.stop()
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


def _print_row(row: dict[str, Any]) -> None:
    d, t = row["direct"], row["through"]
    print(
        f"{row['kind']:6} {row['rate']:5d}/s  direct p50 {d['p50_ms']:6.2f} p99 {d['p99_ms']:7.2f}"
        f"  through p50 {t['p50_ms']:6.2f} p99 {t['p99_ms']:7.2f}"
        f"  added p50 {row['added_p50_ms']:+6.2f} p99 {row['added_p99_ms']:+7.2f}"
        f"  ttfb+ {row['added_ttfb_p50_ms']:+6.2f}"
        f"  own p50 {row['gateway_own_p50_ms']:.3f} p99 {row['gateway_own_p99_ms']:.3f}"
        f"  cpu {row['cpu_ms_per_request']:.3f} ms/req  rss {row['rss_mib']:.0f} MiB"
        f"  achieved {t['achieved_rps']:.0f}/s fail {t['failed']}",
        flush=True,
    )


def table(results: dict[str, Any]) -> str:
    lines = [
        "| kind | rate | direct p50 / p99 | through p50 / p99 | added p50 / p99 | added TTFB p50 "
        "| gateway's own p50 / p99 | CPU / request | RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rates"]:
        d, t = row["direct"], row["through"]
        lines.append(
            f"| {row['kind']} | {row['rate']}/s | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms "
            f"| {t['p50_ms']:.2f} / {t['p99_ms']:.2f} ms "
            f"| {row['added_p50_ms']:+.2f} / {row['added_p99_ms']:+.2f} ms "
            f"| {row['added_ttfb_p50_ms']:+.2f} ms "
            f"| {row['gateway_own_p50_ms']:.3f} / {row['gateway_own_p99_ms']:.3f} ms "
            f"| {row['cpu_ms_per_request']:.3f} ms | {row['rss_mib']:.0f} MiB |"
        )
    for row in results["saturation"]:
        d, t = row["direct"], row["through"]
        lines.append(
            f"| {row['kind']} | saturation (x{row['concurrency']}) | {d['rps']:.0f} req/s "
            f"| {t['rps']:.0f} req/s | | | | | |"
        )
    for row in results.get("replicas", []):
        lines.append(
            f"| chat | {row['replicas']} replica(s), saturation (x{row['concurrency']}) | "
            f"| {row['rps']:.0f} req/s, p50 {row['p50_ms']:.2f} / p99 {row['p99_ms']:.2f} ms "
            "| | | | | |"
        )
    if "replicas_throughput_ratio" in results:
        lines.append(
            f"\n2 replicas / 1 replica, throughput at saturation: "
            f"x{results['replicas_throughput_ratio']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="100,500,1000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r]
    print("== gateway: direct to the simulator vs through the gateway ==", flush=True)
    results = run(rates, args.seconds, args.concurrency)
    print(table(results))
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged["gateway"] = results
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
