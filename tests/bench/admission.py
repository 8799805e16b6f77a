"""The cluster tax: API-server CPU per write of other writers with the admission policies
installed and without them, in the same run; and the policies' cost on the operator's writes.

    python -m tests.bench.admission [--writes 800] [--pairs 5] [--rate 200]
                                    [--policy-file deploy/policy/generated.yaml] [--keep]

Issue 24. On the dedicated control plane (``.cluster/bench``, kube.py), with deploy/
installed, no operator running:

* **other writers**: a ServiceAccount of another controller (``other-system/other-writer``,
  a token from the TokenRequest API) writes in namespaces of its own, by server-side apply:
  updates of its ConfigMaps and of its Secrets, label updates of its Namespaces, and
  creates of new ConfigMaps; each kind in turn, ``--writes`` at a fixed ``--rate``
  (the same in both states, so per-write CPU is compared at one load);
* **the operator's writes**: what a fan-out writes, as the operator's ServiceAccount under
  its field manager: each account's ``integration-settings`` ConfigMap (a rendered
  account's data from file mode, changed on every write, the operator's labels, content
  hash annotation and controller ownerReference to the Account), into namespaces labelled
  as the operator labels them.

The policies (every ValidatingAdmissionPolicy and binding labelled
``app.kubernetes.io/name=settings-controller``) are deleted and re-applied ``--pairs``
times, in the order on/off then off/on alternately (the shared machine's speed drifts).
Each switch is waited for with a probe the policies refuse and RBAC allows (a dry-run
server-side apply of the operator's ConfigMap in ``default``, as the operator): 403
means installed, 200 removed.
Reported per kind: the API server's CPU per write in each state (``/proc``), the
difference in microseconds and as a share of the cost without policies, median of the
pairs with their spread. ``--policy-file`` measures another version of the generated
policies (e.g. main's, for a before/after in the same way).

Prints a table and merges the numbers into tests/bench/results.json under "admission".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.bench import kube

RESULTS = pathlib.Path(__file__).resolve().parent / "results.json"
POLICY_LABEL = "app.kubernetes.io/name=settings-controller"
POLICY_DIR = kube.REPO / "deploy" / "policy"
OTHER_NAMESPACE, OTHER_SA = "other-system", "other-writer"
OTHER_MANAGER = "other-controller"
OPERATOR_MANAGER = "settings-controller"  # the operator's field manager (bodies.FIELD_MANAGER)
PLAN_LABEL, ACCOUNT_LABEL = f"{kube.GROUP}/plan", f"{kube.GROUP}/account"
HASH_ANNOTATION = f"{kube.GROUP}/content-hash"
KEYS = {"openai": "sk-bench-openai", "dalle": "sk-bench-dalle", "runware": "rw-bench"}
OTHER_KINDS = ("ConfigMap update", "Secret update", "Namespace update", "ConfigMap create")
OPERATOR_KIND = "operator ConfigMap update"


# --- set-up ------------------------------------------------------------------------------


def other_identity(info: Any, work: pathlib.Path) -> pathlib.Path:
    """Another controller's ServiceAccount, allowed to write ConfigMaps, Secrets and
    Namespaces everywhere; a kubeconfig with its token."""
    rbac = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OTHER_SA, "namespace": OTHER_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": OTHER_SA},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "secrets", "namespaces"],
                    "verbs": ["get", "list", "create", "patch", "update", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OTHER_SA},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OTHER_SA,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OTHER_SA, "namespace": OTHER_NAMESPACE}
            ],
        },
    ]
    for obj in rbac:
        kube.kubectl(info, "apply", "--server-side", "-f", "-", input=json.dumps(obj))
    token = kube.kubectl(
        info, "create", "token", OTHER_SA, "-n", OTHER_NAMESPACE, "--duration=6h"
    ).strip()
    config = yaml.safe_load(info.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token}
    path = work / "kubeconfig-other"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def rendered_data() -> dict[str, str]:
    """A real rendered account's ConfigMap data: file mode's output for examples/ (acct-123,
    which overrides both integrations)."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [str(kube.CLI), "reconcile", str(kube.REPO / "examples"), "--output-dir", out],
            check=False,
            capture_output=True,
        )
        manifest = yaml.safe_load(
            (pathlib.Path(out) / "acct-123" / "integration-settings.yaml").read_text()
        )
    return {k: str(v) for k, v in manifest["data"].items()}


async def accounts(info: Any, admin: Any, count: int) -> list[tuple[str, str]]:
    """``count`` Accounts with their namespaces labelled as the operator labels them; their
    (name, uid)."""
    names = [f"adm-acct-{i:04d}" for i in range(count)]
    groups = [
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n, "labels": {PLAN_LABEL: "pro", ACCOUNT_LABEL: n}},
            },
            {
                "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
                "kind": "Account",
                "metadata": {"name": n},
                "spec": {"plan": "pro", "namespace": n},
            },
        ]
        for n in names
    ]
    await kube.apply_all(admin, groups, 32)
    listed = json.loads(kube.kubectl(info, "get", "accounts", "-o", "json"))["items"]
    uids = {a["metadata"]["name"]: a["metadata"]["uid"] for a in listed}
    return [(n, uids[n]) for n in names]


# --- the writes ----------------------------------------------------------------------------


Manifest = dict[str, Any]


def other_writes(kind: str, namespaces: list[str], count: int, tag: str) -> list[Manifest]:
    """``count`` writes of one kind, round-robin over ``namespaces``; ``tag`` makes each
    one a change (and each create a new name)."""
    out = []
    for i in range(count):
        ns = namespaces[i % len(namespaces)]
        value = f"{tag}-{i}"
        if kind == "ConfigMap update":
            out.append(_configmap(ns, "other-settings", {"round": value, "payload": "x" * 1500}))
        elif kind == "ConfigMap create":
            out.append(_configmap(ns, f"other-{tag}-{i}", {"payload": "x" * 1500}))
        elif kind == "Secret update":
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "other-credentials", "namespace": ns},
                    "type": "Opaque",
                    "data": {"token": base64.b64encode(value.encode() * 20).decode()},
                }
            )
        elif kind == "Namespace update":
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"other.example.com/round": value}},
                }
            )
        else:
            raise ValueError(kind)
    return out


def _configmap(namespace: str, name: str, data: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": OTHER_MANAGER},
        },
        "data": data,
    }


def operator_writes(
    accts: list[tuple[str, str]], data: dict[str, str], count: int, tag: str
) -> list[Manifest]:
    """What a fan-out writes: each account's ConfigMap, as the operator renders it."""
    out = []
    for i in range(count):
        name, uid = accts[i % len(accts)]
        marker = f'"round": "{tag}-{i}", "id"'
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "integration-settings",
                    "namespace": name,
                    "labels": {
                        "app.kubernetes.io/managed-by": "settings-controller",
                        ACCOUNT_LABEL: name,
                        PLAN_LABEL: "pro",
                    },
                    "annotations": {HASH_ANNOTATION: f"{tag}-{i}"},
                    "ownerReferences": [
                        {
                            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
                            "kind": "Account",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": False,
                        }
                    ],
                },
                "data": {k: v.replace('"id"', marker, 1) for k, v in data.items()},
            }
        )
    return out


async def paced(writer: Any, manifests: list[Manifest], rate: float, concurrency: int) -> float:
    """Apply ``manifests`` at ``rate`` per second (at most ``concurrency`` in flight);
    the seconds it took."""
    started = time.perf_counter()
    queue = iter(enumerate(manifests))

    async def worker() -> None:
        for i, manifest in queue:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await kube.apply_all(writer, [[manifest]], 1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


# --- switching the policies ----------------------------------------------------------------


def policy_files(policy_file: pathlib.Path) -> list[pathlib.Path]:
    return [policy_file, POLICY_DIR / "plan-may-override.yaml"]


def install_policies(info: Any, files: list[pathlib.Path]) -> None:
    for f in files:
        kube.kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(f))


def remove_policies(info: Any) -> None:
    kube.kubectl(
        info,
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        "-l",
        POLICY_LABEL,
        "--wait=true",
    )


def probe(info: Any, namespace: str) -> bool:
    """True when the policies hold the operator: a write RBAC allows and they refuse (its
    ConfigMap applied in the reserved namespace ``default``, dry run) is refused."""
    manifest = json.dumps(_configmap("default", "integration-settings", {}))
    done = subprocess.run(
        [
            str(info.kubectl_path),
            f"--kubeconfig={info.operator_kubeconfig}",
            "apply",
            "--server-side",
            "--field-manager=settings-controller",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 0:
        return False
    if "ValidatingAdmissionPolicy" in done.stderr:
        return True
    raise RuntimeError(f"probe: {done.stderr}")


async def switch(info: Any, on: bool, files: list[pathlib.Path], namespace: str) -> float:
    """Install or remove the policies; until the API server enforces it (3 probes in a
    row agree, then 2 s more for the other policies' informers); the seconds it took."""
    started = time.monotonic()
    if on:
        install_policies(info, files)
    else:
        remove_policies(info)
    agreed = 0
    while agreed < 3:
        if time.monotonic() - started > 120:
            raise TimeoutError(f"policies never {'enforced' if on else 'lifted'}")
        agreed = agreed + 1 if probe(info, namespace) == on else 0
        await asyncio.sleep(0.3)
    await asyncio.sleep(2)
    return time.monotonic() - started


# --- the run ---------------------------------------------------------------------------------


Cpu = Callable[[], dict[str, float]]


async def measure(
    writer: Any,
    manifests: list[Manifest],
    rate: float,
    concurrency: int,
    cpu: Cpu,
    pprof: Callable[[int], bytes] | None = None,
    profile: pathlib.Path | None = None,
) -> dict[str, float]:
    """The writes, paced; with ``profile``, the API server's CPU profile of the same
    seconds (``pprof``: a GET of /debug/pprof/profile) is written there."""
    before = cpu()
    task = None
    if pprof is not None and profile is not None:
        task = asyncio.create_task(asyncio.to_thread(pprof, max(1, int(len(manifests) / rate))))
    elapsed = await paced(writer, manifests, rate, concurrency)
    after = cpu()
    if task is not None and profile is not None:
        profile.write_bytes(await task)
    n = len(manifests)
    return {
        "writes": n,
        "s": elapsed,
        "writes_per_s": n / elapsed,
        **{
            f"{name}_us_per_write": 1e6 * (after[name] - before.get(name, 0.0)) / n
            for name in after
        },
    }


async def run(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    print(f"admission bench: starting a dedicated control plane ({kube.bench_paths().root})",
          file=sys.stderr)  # fmt: skip
    paths, info = kube.start_control_plane(
        ("--apiserver-arg=--profiling=true",) if args.pprof else ()
    )
    try:
        return await _run(args, work, paths, info)
    finally:
        if not args.keep:
            kube.controlplane.down(paths)


async def _run(
    args: argparse.Namespace, work: pathlib.Path, paths: Any, info: Any
) -> dict[str, Any]:
    def log(what: str) -> None:
        print(f"  {what}", file=sys.stderr, flush=True)

    kube.install(info, KEYS)
    files = policy_files(args.policy_file)
    admin = kube.admin_writer(info)
    other = kube.writer(other_identity(info, work), OTHER_MANAGER)
    operator = kube.writer(info.operator_kubeconfig, OPERATOR_MANAGER)

    def pprof(seconds: int) -> bytes:
        status, body = kube.controlplane.api_get(
            paths, info.server, f"/debug/pprof/profile?seconds={seconds}", timeout=seconds + 30
        )
        if status != 200:
            raise RuntimeError(f"/debug/pprof/profile: {status}")
        return body

    def cpu() -> dict[str, float]:
        used = kube.cpu_seconds(paths)
        return {
            "apiserver": used.get("kube-apiserver", 0.0),
            "etcd": used.get("etcd", 0.0),
            "policies": kube.admission_seconds(paths, info.server, "ValidatingAdmissionPolicy"),
        }

    try:
        others = [f"other-{i:03d}" for i in range(args.namespaces)]
        await kube.apply_all(
            admin,
            ([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}] for n in others),
            32,
        )
        accts = await accounts(info, admin, args.namespaces)
        data = rendered_data()
        # The objects updated below exist first (creates are their own kind), and the
        # policies are on: the operator's ConfigMaps are created as the operator creates them.
        for kind in ("ConfigMap update", "Secret update", "Namespace update"):
            await kube.apply_all(
                other, ([m] for m in other_writes(kind, others, len(others), "setup")), 16
            )
        await kube.apply_all(
            operator, ([m] for m in operator_writes(accts, data, len(accts), "setup")), 16
        )
        settle = await kube_settle(paths, info)
        log(
            f"set up {len(others)} other namespaces, {len(accts)} accounts; quiet after {settle:.0f} s"
        )
        results: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
            "kubernetes": "kube-apiserver " + kube.controlplane.kubernetes_version(),
            "policy_file": str(args.policy_file.resolve().relative_to(kube.REPO))
            if args.policy_file.resolve().is_relative_to(kube.REPO)
            else str(args.policy_file),
            "rate": args.rate,
            "concurrency": args.concurrency,
            "writes_per_kind": args.writes,
            "namespaces": args.namespaces,
            "pairs": [],
        }
        # The states of each round: the policies measured ("on"), none ("off"), and with
        # --compare another version of them ("before"), in an order rotated every round.
        # Every switch goes through "off" (kube.install applied deploy/'s policies).
        states: dict[str, list[pathlib.Path] | None] = {"on": files, "off": None}
        if args.compare is not None:
            states["before"] = policy_files(args.compare)
            results["compare"] = str(args.compare)
        await switch(info, False, files, accts[0][0])
        state = "off"
        labels = list(states)
        for pair in range(args.pairs):
            shift = pair % len(labels)
            order = labels[shift:] + labels[:shift]
            if pair % 2:
                order.reverse()
            measured: dict[str, Any] = {}
            for label in order:
                if label != state:
                    took = 0.0
                    if state != "off":
                        took += await switch(info, False, files, accts[0][0])
                    wanted = states[label]
                    if wanted is not None:
                        took += await switch(info, True, wanted, accts[0][0])
                    state = label
                    log(f"round {pair + 1}: policies {label} ({took:.1f} s)")
                measured[label] = {}
                for kind in (*OTHER_KINDS, OPERATOR_KIND):
                    tag = f"p{pair}{label}"
                    if kind == OPERATOR_KIND:
                        writes = operator_writes(accts, data, args.writes, tag)
                        client = operator
                    else:
                        writes = other_writes(kind, others, args.writes, tag)
                        client = other
                    m = await measure(
                        client,
                        writes,
                        args.rate,
                        args.concurrency,
                        cpu,
                        pprof,
                        args.pprof / f"round{pair + 1}-{label}-{kind.replace(' ', '-')}.pprof"
                        if args.pprof
                        else None,
                    )
                    measured[label][kind] = m
                    log(
                        f"round {pair + 1} {label:>6} {kind:<26} {m['writes_per_s']:6.0f} w/s, "
                        f"API server {m['apiserver_us_per_write']:6.0f} µs/write, in the "
                        f"policy plugin {m['policies_us_per_write']:5.1f} µs"
                    )
            results["pairs"].append(measured)
        if state != "on":
            await switch(info, False, files, accts[0][0])
            await switch(info, True, files, accts[0][0])
        results["summary"] = summarise(results["pairs"])
        if args.compare is not None:
            results["summary_before"] = summarise(results["pairs"], "before")
        return results
    finally:
        await admin.close()
        await other.close()
        await operator.close()


async def kube_settle(paths: Any, info: Any, quiet: float = 4, timeout: float = 300) -> float:
    """Until kube-controller-manager's writes (new namespaces' ServiceAccounts and root CA
    ConfigMaps) have stopped for ``quiet`` seconds."""
    started = time.monotonic()
    last: dict[str, float] | None = None
    since = started
    while time.monotonic() - started < timeout:
        now = kube.apiserver_writes(paths, info.server)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        await asyncio.sleep(1)
    return time.monotonic() - started


def summarise(pairs: list[dict[str, Any]], with_: str = "on") -> dict[str, Any]:
    """Per kind, and for the other writers' kinds together, medians of the pairs:

    * ``cpu_*``: the API server's CPU µs per write (``/proc``) with and without the
      policies, and the pairs' differences, in µs and as a share of the cost without them
      (whole-process CPU: it carries the machine's drift between the two halves of a pair);
    * ``plugin_*``: the µs per write spent inside the ValidatingAdmissionPolicy plugin
      (the API server's own histogram) with and without them, and the difference as a share
      of the CPU per write without them: the same cost, measured where it is spent.
    """
    out: dict[str, Any] = {}
    groups: dict[str, tuple[str, ...]] = {k: (k,) for k in (*OTHER_KINDS, OPERATOR_KIND)}
    groups["other writers, all kinds"] = OTHER_KINDS
    for label, kinds in groups.items():

        def mean(p: dict[str, Any], state: str, key: str, kinds: tuple[str, ...] = kinds) -> float:
            return statistics.fmean(p[state][k][key] for k in kinds)

        row: dict[str, Any] = {}
        off_cpu = [mean(p, "off", "apiserver_us_per_write") for p in pairs]
        for name, key in (("cpu", "apiserver_us_per_write"), ("plugin", "policies_us_per_write")):
            on = [mean(p, with_, key) for p in pairs]
            off = [mean(p, "off", key) for p in pairs]
            diffs = [a - b for a, b in zip(on, off, strict=True)]
            shares = [d / b for d, b in zip(diffs, off_cpu, strict=True)]
            row.update(
                {
                    f"{name}_on_us": statistics.median(on),
                    f"{name}_off_us": statistics.median(off),
                    f"{name}_extra_us": statistics.median(diffs),
                    f"{name}_extra_share": statistics.median(shares),
                    f"{name}_runs_extra_us": [round(d, 1) for d in diffs],
                }
            )
        out[label] = row
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        f"admission policies' cost on {results['machine']}; {results['kubernetes']}; "
        f"policies {results['policy_file']}; {results['writes_per_kind']} writes per kind "
        f"at {results['rate']:.0f}/s, {len(results['pairs'])} on/off pairs",
        f"{'writes':<26} {'API server CPU µs/write: without':>32} {'with':>6} {'extra':>6} "
        f"{'':>6}  {'in the policy plugin µs: with':>29} {'without':>7} {'extra':>6}",
    ]
    rows = [("", results["summary"])]
    if "summary_before" in results:
        rows = [("before: ", results["summary_before"]), ("after: ", results["summary"])]
    for prefix, summary in rows:
        if prefix:
            lines.append(
                prefix + (results["compare"] if prefix == "before: " else results["policy_file"])
            )
        lines += _rows(summary)
    return "\n".join(lines)


def _rows(summary: dict[str, Any]) -> list[str]:
    lines = []
    for label, s in summary.items():
        lines.append(
            f"{label:<26} {s['cpu_off_us']:>32.0f} {s['cpu_on_us']:>6.0f} "
            f"{s['cpu_extra_us']:>6.0f} {100 * s['cpu_extra_share']:>5.1f}%  "
            f"{s['plugin_on_us']:>29.1f} {s['plugin_off_us']:>7.1f} {s['plugin_extra_us']:>6.1f} "
            f"({100 * s['plugin_extra_share']:.2f}% of the CPU per write)"
        )
    return lines


def merge(results: dict[str, Any], key: str) -> None:
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged[key] = results
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--writes", type=int, default=800, help="writes per kind and state")
    p.add_argument("--pairs", type=int, default=5, help="on/off pairs")
    p.add_argument("--rate", type=float, default=200, help="writes per second, both states")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--namespaces", type=int, default=100, help="other namespaces, and accounts")
    p.add_argument("--policy-file", type=pathlib.Path, default=POLICY_DIR / "generated.yaml")
    p.add_argument(
        "--compare",
        type=pathlib.Path,
        default=None,
        help="another version of the generated policies, measured in the same rounds "
        "(reported as 'before')",
    )
    p.add_argument(
        "--results-key",
        default="admission",
        help="where in results.json (another key keeps a comparison run apart)",
    )
    p.add_argument(
        "--pprof",
        type=pathlib.Path,
        default=None,
        help="start kube-apiserver with --profiling=true and write its CPU profile of each "
        "measurement into DIR (go tool pprof -top -cum -focus=admission/plugin/policy FILE)",
    )
    p.add_argument("--keep", action="store_true", help="leave the control plane running")
    p.add_argument("--work", type=pathlib.Path, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    work = args.work or pathlib.Path("/tmp") / f"settings-bench-admission-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    if args.pprof:
        args.pprof.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, work))
    print(table(results))
    merge(results, args.results_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
