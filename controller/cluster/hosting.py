"""kopf as the process host: start-up, login, the stop signals, a clean shutdown.

What kopf does here: it runs the event loop, hands the operator its
credentials (``login``, from the same kubeconfig parsing the client uses,
``logins``), calls ``Operator.start`` once (``startup``) and ``Operator.stop``
on SIGTERM/SIGINT or the stop flag (``cleanup``), and bounds the exit. The probe
and metrics servers (``serving``) start before it, so they answer while the
replica proves its confinement, waits for the Lease or for the API server.

What it does not do is route events: no ``@kopf.on`` handler follows a
resource, and ``operating`` follows everything with one paged list and one
watch per kind (``runtime.following``) into compact records. kopf gave every
object a worker, a queue and several memories and handed each event to a
handler. Measured at 10,000 accounts (tests/bench/README.md, rows 9 and 14):
for the generated ConfigMaps and Secrets, 20,000 objects whose every event but
a drift is the echo of the operator's own write, following them here took the
operator's CPU per account in a fan-out from 1.87 to 0.87 ms and its RSS after
a restart from 780 to 390 MiB; for the custom resources, which kopf held with
every listed body until the last of 14,000 was indexed, the RSS at rest after
a cold start went from 270 to 150 MiB (high-water mark 348 to 153 MiB).

kopf also watches a resource in every namespace or in a fixed set: following
the key Secrets through it would need the right to list every Secret in the
cluster, where ``following.secrets_in`` needs it in one namespace. Nor does
kopf store a diff base or progress in an annotation (an override holding a
pasted key would be copied there) or add a finalizer (a down operator never
blocks a deletion).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from typing import Any

import aiohttp.web
import kopf

from controller import schemafiles
from controller.cluster import confinement, logins, metrics, operating, serving
from controller.cluster.runtime import clients
from controller.core import catalog, credentials, errors

log = logging.getLogger(__name__)

# How long a forbidden write the API server admits is judged again before the operator
# calls itself unconfined: admission policies are enforced seconds after they are applied.
POLICY_GRACE = 15.0

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings, once, each with the reason it is not the default."""
    # kopf's peering is not used: with equal priorities every replica pauses.
    # A Lease (runtime.leases, taken in ``Operator.start``) elects the one
    # replica that watches and writes; the Deployment still runs one, Recreate.
    settings.peering.standalone = True
    # kopf follows no resource, so it adds no finalizer; should one ever be
    # added, it carries our name rather than kopf's.
    settings.persistence.finalizer = f"{catalog.GROUP}/operator"
    # Change-detecting handlers are not used, so kopf stores no diff base. If
    # one is ever added, neither overrides (which may hold a pasted key) nor a
    # Secret's data may be copied into the last-handled-configuration annotation.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=catalog.GROUP,
        key="last-handled-configuration",
        ignored_fields=["spec.overrides", "data", "stringData"],
    )
    # Handler progress, likewise unused, goes under our prefix too.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=catalog.GROUP)
    # The reconciler posts its own Events with fixed reasons and value-free
    # messages; kopf's would quote exception texts.
    settings.posting.enabled = False
    # Fail a hung request quickly: the reconciler retries and the resync catches up.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.watching.connect_timeout = 10
    # Exit within the Deployment's terminationGracePeriodSeconds (30).
    settings.process.ultimate_exiting_timeout = 25


def registry(operator: operating.Operator) -> kopf.OperatorRegistry:
    """The operator's own kopf registry: three activities, each a line, no resource
    handler. The operator reaches them by closure, not through kopf's memo."""
    hosted = kopf.OperatorRegistry()

    @kopf.on.startup(registry=hosted)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        await operator.start()

    @kopf.on.login(registry=hosted)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        found = logins.connection(operator.options.kubeconfig)
        if found is None:  # an exec plugin or auth provider: what kopf itself can do
            return kopf.login_with_kubeconfig(**kwargs) or kopf.login_with_service_account(**kwargs)
        return found

    @kopf.on.cleanup(registry=hosted)
    async def cleanup(**_: Any) -> None:
        await operator.stop()

    return hosted


class RedactingFilter(logging.Filter):
    """An Account or namespace may be named like a key (``sk-live-...`` is a valid
    name): every log line, whoever writes it, has such words masked as the core prints
    names (``<name that looks like a key>``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = credentials.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters print exc_text when exc_info is gone (the JSON one as "exc_info").
            record.exc_text, record.exc_info = credentials.redact(record.exc_text), None
        return True


def configure_logging(level: str, log_format: str) -> None:
    """``--log-level`` and ``--log-format`` (json: one object per line; text)."""
    logging.getLogger().handlers.clear()
    kopf.configure(
        debug=level == "debug",
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(LOG_LEVELS[level])
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if level != "debug":
        # One line per HTTP request and per handled watch event drowns what
        # matters at scale; failures are still logged as warnings.
        for name in ("kopf.objects",):
            logging.getLogger(name).setLevel(max(logging.WARNING, LOG_LEVELS[level]))


def run(options: operating.Options) -> None:
    """Run until SIGTERM/SIGINT (exit 0), a lost Lease (exit 0) or a root task that died
    (exit 1).

    The kubeconfig is read first: one that cannot be used raises
    ``clients.KubeconfigError`` (one line, exit 1) before anything starts.
    """
    configure_logging(options.log_level, options.log_format)
    cat = schemafiles.load_catalog()
    client = clients.Client.connect(options.kubeconfig, cat)
    context: ssl.SSLContext | None = None
    if options.metrics_address and options.metrics_secure:
        try:
            context = serving.tls_context(options.metrics_cert_dir)
        except (OSError, ssl.SSLError) as e:
            raise errors.SettingsError(
                f"--metrics-cert-dir {options.metrics_cert_dir}: no usable tls.crt and tls.key "
                f"({getattr(e, 'strerror', None) or getattr(e, 'reason', None) or e})"
            ) from None
    meter = metrics.Metrics(lease_name=options.election.name)
    client.session.on_response = meter.rest_request
    failed: str | None = None
    with contextlib.suppress(asyncio.CancelledError):
        failed = asyncio.run(_serve_and_run(options, cat, client, meter, context))
    if failed is not None:
        print(
            f"settings-controller operator: stopped: {credentials.redact(failed)}", file=sys.stderr
        )
        raise SystemExit(1)


async def _serve_and_run(
    options: operating.Options,
    cat: catalog.Catalog,
    client: clients.Client,
    meter: metrics.Metrics,
    context: ssl.SSLContext | None,
) -> str | None:
    """The probe and metrics servers, then kopf until it stops; the servers last. The root
    task that died, if one did."""
    stop = asyncio.Event()  # kopf's stop flag: a lost Lease or a dead root task sets it
    operator = operating.Operator(options, cat, client, meter, stop=stop.set)
    runners: list[aiohttp.web.AppRunner] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        if options.probe_address:
            app = serving.probes(operator.readiness)
            runners.append(await _start(app, "--health-probe-bind-address", options.probe_address))
        if options.metrics_address:
            gate = serving.Gate(client) if context is not None else None
            if context is not None and options.metrics_cert_dir is not None:
                cert = serving.Certificate(options.metrics_cert_dir)
                tasks.append(asyncio.create_task(serving.reload_certificate(cert, context)))
            app = serving.metrics(meter.registry, gate)
            runners.append(
                await _start(app, "--metrics-bind-address", options.metrics_address, context)
            )
        # Before anything is watched or written: is the operator held by its policies?
        await _prove_confined(options, client, meter)
        await kopf.operator(
            registry=registry(operator),
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
        )
    finally:
        for task in tasks:
            task.cancel()
        for runner in runners:
            await runner.cleanup()
        await client.close()
    return operator.supervisor.failed


async def _start(
    app: aiohttp.web.Application,
    flag: str,
    address: tuple[str, int],
    context: ssl.SSLContext | None = None,
) -> aiohttp.web.AppRunner:
    host, port = address
    try:
        return await serving.start(app, host, port, context)
    except OSError as e:  # in use, not an address of this host
        raise errors.SettingsError(f"{flag} {host}:{port}: {e.strerror or e}") from None


async def _prove_confined(
    options: operating.Options, client: clients.Client, meter: metrics.Metrics
) -> None:
    """``confinement.check`` until the API server judges every probe (an unreachable or
    failing server is waited out, as the Lease is, while the probes answer and /readyz
    says not ready); then the log line, the Event and the metric, and exit 1 when
    unconfined unless ``--allow-unconfined``."""
    # kopf handles SIGTERM/SIGINT only once it runs: until then, a stop ends the wait
    # cleanly (exit 0), as it would end a standby's wait for the Lease.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        waiting = False
        admitted_until: float | None = None
        while True:
            verdict = await confinement.check(client)
            if verdict.confined:
                break
            if verdict.admitted:
                # Policies applied a moment ago (`kubectl apply -f install.yaml`, then the
                # operator) take a few seconds to be enforced: judged again for a while.
                now = time.monotonic()
                if admitted_until is None:
                    admitted_until = now + POLICY_GRACE
                    log.info(
                        "confinement check: %s; checking again for %.0f s (policies just "
                        "applied take effect within seconds)",
                        "; ".join(verdict.admitted),
                        POLICY_GRACE,
                    )
                if now >= admitted_until:
                    break
            elif not waiting:
                log.warning("confinement check: %s; retrying", "; ".join(verdict.unjudged))
                waiting = True
            await asyncio.sleep(options.election.retry)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    await confinement.report(client, verdict, options.namespace)
    meter.confined.set(int(verdict.confined))
    if not verdict.confined and not options.allow_unconfined:
        print(
            f"settings-controller operator: refusing to start: {verdict.line()}; "
            "--allow-unconfined starts it anyway",
            file=sys.stderr,
        )
        raise SystemExit(1)
