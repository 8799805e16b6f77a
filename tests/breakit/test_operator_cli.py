"""Breaks of the operator's documented command line (no API server needed to show them)."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request

import yaml

from tests.conftest import CLI


def _free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _answers(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def test_an_ipv6_health_probe_address_is_served(tmp_path: pathlib.Path) -> None:
    """README.md:119 and deploy/README.md:393 (``--health-probe-bind-address HOST:PORT``;
    the liveness probe answers, a standby's included: deploy/README.md:327-328).

    Broke: ``--health-probe-bind-address [::1]:PORT`` is accepted (parse_bind_address strips
    the brackets), but the liveness URL is then built as ``http://::1:PORT/healthz``, which
    ``urlsplit`` cannot parse: start-up fails with "Port could not be cast to integer value as
    ':1:PORT'" and retries every 60 s; nothing ever answers the probe, so a kubelet would
    restart the pod forever (commands/operator.py builds the URL without brackets;
    the standby liveness endpoint of the time; since then the probes are served by cluster/serving.py). The same flags with 127.0.0.1 answer at once.
    The API server here is unreachable on purpose: a standby answers its probe anyway."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    port = _free_port(socket.AF_INET6, "::1")
    with (tmp_path / "operator.log").open("w") as log:
        proc = subprocess.Popen(
            [
                str(CLI),
                "operator",
                f"--kubeconfig={kubeconfig}",
                "--metrics-bind-address=0",
                f"--health-probe-bind-address=[::1]:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            answered = _answers(f"http://[::1]:{port}/healthz", 20)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert answered, (tmp_path / "operator.log").read_text()[-800:]
