"""The gateway's test workload image: the official ``openai`` package (the version
pyproject.toml pins) on the Debian base tests/harness/image.py builds, from
tests/node/openai-client.Containerfile.

``python3 -m tests.node.client_image`` builds it. Cached by its inputs, as the operator
image is: the tag and the archive carry a hash of the Containerfile, the base's tag and the
openai version, so a second build with the same inputs costs an ``inspect``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import image as image_

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = Path(__file__).with_name("openai-client.Containerfile")
NAME = "localhost/settings-controller-test/openai-client"
BUILD_SECONDS: list[float] = []  # what a build (or a cache hit) took in this process


def openai_version() -> str:
    """The openai pin of pyproject.toml (the SDK tests/gateway uses on the host)."""
    found = re.search(r'"openai==([^"]+)"', (REPO / "pyproject.toml").read_text())
    if found is None:
        raise RuntimeError("pyproject.toml pins no openai version")
    return found.group(1)


def tag(base: str) -> str:
    inputs = "\0".join((CONTAINERFILE.read_text(), base, openai_version()))
    return f"{NAME}:{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def build() -> tuple[str, Path]:
    """The image's tag and a docker-archive of it, built only when an input changed."""
    started = time.monotonic()
    base = image_.build_base()
    wanted = tag(base)
    archive = image_.image_dir() / f"openai-client-{wanted.rsplit(':', 1)[1]}.tar"
    if not archive.exists():
        have = subprocess.run(
            image_.buildah_cmd("inspect", "--type", "image", wanted), capture_output=True
        )
        if have.returncode != 0:
            cmd = image_.buildah_cmd(
                "bud",
                "--isolation",
                "chroot",
                "--network",
                "host",  # pip fetches the pinned openai and its dependencies
                "--build-arg",
                f"BASE={base}",
                "--build-arg",
                f"OPENAI_VERSION={openai_version()}",
                "--file",
                str(CONTAINERFILE),
                "--tag",
                wanted,
            )
            if image_.HOST_CA_BUNDLE.exists():
                bundle = image_.HOST_CA_BUNDLE
                cmd += ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
            subprocess.run([*cmd, str(CONTAINERFILE.parent)], check=True)
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        subprocess.run(
            image_.buildah_cmd("push", "--quiet", wanted, f"docker-archive:{partial}:{wanted}"),
            check=True,
        )
        partial.rename(archive)
    BUILD_SECONDS.append(time.monotonic() - started)
    print(f"client image: {wanted} in {BUILD_SECONDS[-1]:.1f}s", file=sys.stderr, flush=True)
    return wanted, archive


if __name__ == "__main__":
    print(build()[0])
