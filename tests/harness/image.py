"""Build the operator image from deploy/Dockerfile without a daemon, and load it.

``python3 tests/harness/image.py build|load`` (``make image`` does both).
Standard library only. Tools: buildah (Debian; builds a Dockerfile with no
daemon, as root, RUN steps under chroot isolation so no runtime set-up is
needed) and mmdebstrap (Debian; the base root filesystem from Debian's
packages, since no container registry is reachable here).

Caching, keyed on inputs: the base archive is rebuilt only when this file's
package list changes (its name carries a hash of it); buildah ``--layers``
reuses every Dockerfile step whose inputs (the locks, the sources) did not
change. The storage lives in ``.cluster/image/`` (``make clean-image``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/settings-controller:test"
BASE_IMAGE = "localhost/settings-controller-base"
SUITE = "bookworm"
# python3 of bookworm is 3.11, what pyproject.toml requires; venv for the
# Dockerfile's virtualenvs; ca-certificates for TLS to the API server.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Debian's own sources, as configured on this machine (no host named here).
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# When the machine's TLS trust differs from the base image's (a private CA),
# pip inside the build uses the machine's bundle.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def image_dir() -> Path:
    root = Path(os.environ.get("KUBE_HARNESS_DIR", REPO_ROOT / ".cluster"))
    return root.resolve() / "image"


def _log(msg: str) -> None:
    print(f"image: {msg}", file=sys.stderr, flush=True)


def buildah_cmd(*args: str) -> list[str]:
    d = image_dir()
    return [
        "buildah",
        "--root",
        str(d / "storage"),
        "--runroot",
        str(d / "run"),
        # vfs: works on any filesystem, including one that is itself overlayfs.
        "--storage-driver",
        "vfs",
        *args,
    ]


def _check_tools() -> None:
    missing = [t for t in ("buildah", "mmdebstrap") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"image: missing {', '.join(missing)} (make image-deps installs them)")


def base_tag() -> str:
    key = hashlib.sha256(" ".join((SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    return f"{BASE_IMAGE}:{SUITE}-{key}"


def build_base() -> str:
    """The Debian root filesystem as an image, built once per package list."""
    tag = base_tag()
    have = subprocess.run(buildah_cmd("inspect", "--type", "image", tag), capture_output=True)
    if have.returncode == 0:
        return tag
    d = image_dir()
    d.mkdir(parents=True, exist_ok=True)
    archive = d / "base.tar"
    _log(f"mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)}")
    started = time.monotonic()
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            SUITE,
            str(archive),
            str(APT_SOURCES),
        ],
        check=True,
        env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"),
    )
    container = subprocess.run(
        buildah_cmd("from", "scratch"), check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(buildah_cmd("add", "--quiet", container, str(archive), "/"), check=True)
        subprocess.run(buildah_cmd("commit", "--quiet", container, tag), check=True)
    finally:
        subprocess.run(buildah_cmd("rm", container), capture_output=True)
    archive.unlink()
    _log(f"base {tag} in {time.monotonic() - started:.1f}s")
    return tag


def build() -> Path:
    """Build deploy/Dockerfile on the local base; write a docker-archive."""
    _check_tools()
    base = build_base()
    started = time.monotonic()
    cmd = buildah_cmd(
        "bud",
        "--layers",
        "--isolation",
        "chroot",
        # pip fetches the locked, hashed wheels from the package index.
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "--file",
        "deploy/Dockerfile",
        "--tag",
        IMAGE,
    )
    if HOST_CA_BUNDLE.exists():
        cmd += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    subprocess.run([*cmd, "."], cwd=REPO_ROOT, check=True)
    archive = image_dir() / "settings-controller.tar"
    archive.unlink(missing_ok=True)
    subprocess.run(
        buildah_cmd("push", "--quiet", IMAGE, f"docker-archive:{archive}:{IMAGE}"), check=True
    )
    _log(f"built {IMAGE} in {time.monotonic() - started:.1f}s: {archive}")
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "load"])
    args = parser.parse_args(argv)
    archive = build()
    if args.command == "load":
        import node  # the sibling module (this file runs as a script)

        node.import_image(node.NodePaths(image_dir().parent), archive)
        _log(f"loaded {IMAGE} into the node's containerd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
