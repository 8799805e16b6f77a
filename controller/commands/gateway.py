"""``gateway``: an OpenAI-compatible proxy that enforces each account's effective settings and
injects the platform key (the README, "Gateway: the OpenAI SDK without a key").

Local mode: ``gateway --declarations DIR --tokens FILE (--keys-dir DIR | --keys-from-env)
[--listen 127.0.0.1:8080]``. Cluster mode (no ``--declarations``): ``gateway [--kubeconfig
K] [--listen HOST:PORT] [--audience integrations.igny8.com] [--namespace NS]``, which
follows the API server (``gateway.cluster``) and starts serving once it has listed what it
follows. Runs until SIGINT (exit 130) or SIGTERM (exit 0); a follow that dies, or a
kubeconfig it cannot use, exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.commands import common

if TYPE_CHECKING:
    # Imported in ``run``: every command builds the parser, which imports this module, and
    # asyncio is ~45 ms of a `reconcile` with nothing changed.
    import asyncio

log = logging.getLogger("settings_controller.gateway")

EXIT_INTERRUPTED = 130
DEFAULT_NAMESPACE = "settings-controller-system"  # the operator's
DEFAULT_AUDIENCE = "integrations.igny8.com"


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a positive integer")
    return int(value)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "gateway",
        help="serve an OpenAI-compatible API that enforces each account's settings",
        description="Serve POST /v1/chat/completions, POST /v1/images/generations and GET "
        "/v1/models. A workload authenticates with a bearer token that names its account "
        "namespace, never with a platform key; fields it leaves out get the account's "
        "effective values, fields it sets must be ones the account could have chosen, and the "
        "platform key is added on the way to the provider. Local mode follows DIR, FILE and "
        "the keys while it runs. Requests honour HTTPS_PROXY, HTTP_PROXY and NO_PROXY.",
    )
    local = parser.add_argument_group("local mode")
    local.add_argument(
        "--declarations", type=common.existing_dir, metavar="DIR", help="declarations, as watch"
    )
    local.add_argument(
        "--tokens",
        type=pathlib.Path,
        metavar="FILE",
        help="YAML mapping of bearer tokens to account namespaces (token: namespace)",
    )
    keys = local.add_mutually_exclusive_group()
    keys.add_argument(
        "--keys-dir",
        type=common.existing_dir,
        metavar="DIR",
        help="key values laid out like a mounted Secret: DIR/<key> or DIR/<secretName>/<key>",
    )
    keys.add_argument(
        "--keys-from-env",
        action="store_true",
        help="key values from SETTINGS_CONTROLLER_KEY_<KEY>, e.g. SETTINGS_CONTROLLER_KEY_OPENAI",
    )
    cluster = parser.add_argument_group("cluster mode (no --declarations)")
    cluster.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        metavar="K",
        help="kubeconfig (default: in-cluster ServiceAccount, else $KUBECONFIG)",
    )
    cluster.add_argument(
        "--audience",
        metavar="AUDIENCE",
        help=f"audience the workloads' ServiceAccount tokens must carry (default {DEFAULT_AUDIENCE})",
    )
    cluster.add_argument(
        "--namespace",
        metavar="NS",
        help="namespace of the platform key Secrets (default: $POD_NAMESPACE or "
        f"{DEFAULT_NAMESPACE}, as the operator's)",
    )
    cluster.add_argument(
        "--token-cache-seconds",
        type=common.positive_seconds,
        metavar="SECONDS",
        help="how long a TokenReview's verdict is kept (default 60; never past the token's "
        "expiry): a revoked token works until then",
    )
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="where to serve (default 127.0.0.1:8080; port 0 picks a free one)",
    )
    parser.add_argument(
        "--timeout",
        type=common.positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="until the provider's headers, and between two streamed chunks (default 60)",
    )
    parser.add_argument(
        "--max-body",
        type=_positive_int,
        default=4 << 20,
        metavar="BYTES",
        help="largest request body (default 4 MiB; larger: 413)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=100,
        metavar="N",
        help="upstream connections at once (default 100; more requests wait for one)",
    )
    parser.add_argument(
        "--allow-insecure-endpoint",
        action="store_true",
        help="send keys to a plain http:// endpoint on another host too (refused by default: "
        "the key would cross the network unencrypted; loopback is always allowed)",
    )
    parser.add_argument(
        "--metrics-listen",
        type=_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at /metrics there (default: off)",
    )
    parser.add_argument(
        "--metrics-accounts",
        type=int,
        default=0,
        metavar="N",
        help="per-account metrics for the first N accounts seen, the rest as 'other' (default 0: "
        "per plan only)",
    )
    parser.set_defaults(handler=run)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the dev extra has it; the image does not
    yet): libuv in C takes about a quarter off what each request costs the gateway."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(args: argparse.Namespace) -> int:

    if args.declarations is None and args.tokens is None:
        return _run_cluster(args)
    if args.kubeconfig is not None or args.audience is not None or args.namespace is not None:
        raise common.UsageError(
            "settings-controller gateway: --kubeconfig, --audience and --namespace are cluster "
            "mode; local mode takes --declarations, --tokens and the keys"
        )
    if args.token_cache_seconds is not None:
        raise common.UsageError(
            "settings-controller gateway: --token-cache-seconds is cluster mode"
        )
    if args.declarations is None or args.tokens is None:
        raise common.UsageError(
            "settings-controller gateway: local mode needs --declarations DIR and --tokens FILE"
        )
    if not args.tokens.is_file():
        raise common.UsageError(
            f"settings-controller gateway: {common.shown(str(args.tokens))}: no such file"
        )
    if args.keys_dir is None and not args.keys_from_env:
        raise common.UsageError(
            "settings-controller gateway: local mode needs --keys-dir DIR or --keys-from-env"
        )
    # Imported here: aiohttp and watchdog are a tenth of a second other commands need not pay.
    from controller.gateway import local

    source = local.LocalSource(common.load_catalog(), args.declarations, args.tokens, args.keys_dir)
    source.start()
    try:
        return _serve(args, source, f"local mode: {common.shown(str(args.declarations))}")
    finally:
        source.stop()


def _run_cluster(args: argparse.Namespace) -> int:
    if args.keys_dir is not None or args.keys_from_env:
        raise common.UsageError(
            "settings-controller gateway: --keys-dir and --keys-from-env are local mode; "
            "cluster mode reads the keys from the Secrets the global names"
        )
    from controller.cluster.runtime import clients
    from controller.gateway import cluster

    cat = common.load_catalog()
    try:
        client = clients.Client.connect(args.kubeconfig, cat)
    except clients.KubeconfigError as e:
        print(f"settings-controller gateway: error: {e}", file=sys.stderr)
        return 1
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE
    reviews = cluster.Reviews(audience=args.audience or DEFAULT_AUDIENCE)
    if args.token_cache_seconds is not None:
        reviews = dataclasses.replace(reviews, ttl=args.token_cache_seconds)
    source = cluster.ClusterSource(cat, client, namespace, reviews)
    return _serve(
        args,
        source,
        f"cluster mode: audience {reviews.audience}, keys from namespace {namespace}",
        start=source.start,
        stop=source.stop,
    )


def _serve(
    args: argparse.Namespace,
    source: Any,
    mode: str,
    start: Callable[[], Awaitable[None]] | None = None,
    stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    import asyncio

    from controller.gateway import metrics, serving

    gateway = serving.Gateway(
        source,
        serving.Limits(
            max_body=args.max_body,
            timeout=args.timeout,
            connections=args.max_connections,
            allow_insecure=args.allow_insecure_endpoint,
        ),
        metrics.Metrics(accounts=max(args.metrics_accounts, 0)),
    )
    if hasattr(source, "on_review"):
        source.on_review = gateway.metrics.review
    host, port = args.listen
    code = 0

    async def main() -> None:
        nonlocal code
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopped(signum: int) -> None:
            nonlocal code
            code = EXIT_INTERRUPTED if signum == signal.SIGINT else 0
            stopping.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped, signum)

        def failed() -> None:
            nonlocal code
            code = 1
            stopping.set()

        if hasattr(source, "on_failure"):
            source.on_failure = failed  # a follow that dies stops the gateway (exit 1)

        def ready(bound: int, metrics_port: int | None) -> None:
            shown = f"[{host}]" if ":" in host else host
            log.info("gateway: serving http://%s:%d/v1 (%s)", shown, bound, mode)
            if metrics_port is not None:
                log.info(
                    "gateway: metrics at http://%s:%d/metrics", args.metrics_listen[0], metrics_port
                )

        try:
            if start is not None:
                starting = asyncio.ensure_future(start())
                waiter = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not starting.done():
                    starting.cancel()
                    return
                starting.result()
            if not stopping.is_set():
                await serving.serve(gateway, host, port, stopping, args.metrics_listen, ready)
        finally:
            if stop is not None:
                await stop()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except OSError as e:
        print(f"settings-controller gateway: error: cannot listen: {e.strerror}", file=sys.stderr)
        return 1
    return code
