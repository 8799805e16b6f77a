"""File mode against hostile trees: what a Git checkout, or a hand, can put under DIR and OUT.

Git stores symlinks, so a checkout can point ``*.yaml`` names at devices, at
files and directories anywhere on the machine, at nothing, at themselves. Each
tree here goes through the CLI as users run it (``validate``, ``reconcile``,
``render``, ``get``, a running ``watch``), every run under a 512 MiB address
space limit and a timeout, with a strict UTF-8 stdout (a user's locale), and,
when the tests run as root, without the capabilities that let root read any
file (so that an unreadable file is unreadable). The promises: never a
traceback; exit 1 with an error naming each refused file; valid accounts still
written; nothing written outside OUT (the whole temporary tree but OUT is
compared before and after, byte for byte); no run of 8 characters of a key
pasted into YAML syntax; ``watch`` survives and writes a later change.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import hypothesis
import pytest
from hypothesis import strategies as st

from controller.files import documents, loading, reading
from tests.conftest import CLI
from tests.filemode.outputs import MIDWRITE
from tests.harness.fixtures import until
from tests.reliability.conftest import Figures, fuzz_budget
from tests.reliability.test_filemode_faults import GLOBAL, account_file

ADDRESS_SPACE = 512 << 20  # each CLI run; 3 GiB of /dev/zero or a sparse file cannot fit
TIMEOUT = 60.0  # each CLI run; a FIFO opened for reading would block forever
KEY = "sk-proj-HoStIlEtReE0123456789abcdefXYZ"  # key-shaped (controller.core.credentials)
HEADER = "apiVersion: integrations.igny8.com/v1alpha1\n"
MIB = 1 << 20


def account(name: str) -> str:
    return f"{HEADER}kind: Account\nmetadata: {{name: {name}}}\nspec: {{plan: pro, namespace: {name}}}\n"


# What one run of the CLI is allowed: an address-space bound and, as root, no way
# around file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH dropped from the
# bounding set before exec, so the new program never holds them).
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _confine() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


# A user's UTF-8 locale: printing a file name that is not UTF-8 must not fail.
_ENV = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}


@dataclasses.dataclass
class Ran:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def run(*args: str | pathlib.Path, cwd: pathlib.Path | None = None) -> Ran:
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), *map(str, args)],
        capture_output=True,
        timeout=TIMEOUT,
        preexec_fn=_confine,
        env=_ENV,
        cwd=cwd,
    )
    ran = Ran(
        tuple(map(str, args)),
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
        time.monotonic() - started,
    )
    assert "Traceback" not in ran.text, ran.text[-3000:]
    assert_no_key(ran.text, " ".join(ran.args))
    return ran


def assert_no_key(text: str, where: str) -> None:
    runs = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    found = sorted(r for r in runs if r in text)
    assert not found, f"{where}: fragments of the key: {found}"


def shown(path: str) -> str:
    """A path as the CLI prints it: bytes that are not UTF-8 escaped (``\\udce9``)."""
    return path.encode("utf-8", "backslashreplace").decode()


# The tree: each entry makes one or more paths in a directory, and says what
# every path must produce (an error containing ``error``, or an account written).


@dataclasses.dataclass(frozen=True)
class Entry:
    make: Callable[[pathlib.Path, pathlib.Path], None]  # (directory, outside)
    errors: dict[str, str]  # path made (relative to the directory) -> text of its error
    accounts: tuple[str, ...] = ()  # accounts it declares that must be written
    root_only: bool = False


def _link(name: str, target: str | Callable[[pathlib.Path], pathlib.Path]) -> Callable[..., None]:
    def make(directory: pathlib.Path, outside: pathlib.Path) -> None:
        os.symlink(target if isinstance(target, str) else target(outside), directory / name)

    return make


def _write(name: str | bytes, text: str, mode: int | None = None) -> Callable[..., None]:
    def make(directory: pathlib.Path, outside: pathlib.Path) -> None:
        path = os.path.join(os.fsencode(directory), os.fsencode(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(path, mode)

    return make


def _fifo(directory: pathlib.Path, outside: pathlib.Path) -> None:
    os.mkfifo(directory / "fifo.yaml")


def _socket(directory: pathlib.Path, outside: pathlib.Path) -> None:
    # A bound UNIX socket leaves its node behind when closed. Bound from the
    # directory itself: socket paths are limited to 107 bytes.
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("socket.yaml")
    finally:
        os.chdir(cwd)


def _device(directory: pathlib.Path, outside: pathlib.Path) -> None:
    os.mknod(directory / "device.yaml", 0o644 | 0o020000, os.makedev(1, 5))  # /dev/zero's


def _loop_pair(directory: pathlib.Path, outside: pathlib.Path) -> None:
    os.symlink("loop-b.yaml", directory / "loop-a.yaml")
    os.symlink("loop-a.yaml", directory / "loop-b.yaml")


def _sparse(directory: pathlib.Path, outside: pathlib.Path) -> None:
    with open(directory / "sparse.yaml", "wb") as fh:
        fh.truncate(3 << 30)  # a 3 GiB regular file that takes no disk


def _linked(directory: pathlib.Path, outside: pathlib.Path) -> None:
    # A symlink to a regular file inside the tree: read (a ConfigMap volume's
    # visible names are such links).
    (directory / ".shared").mkdir(exist_ok=True)
    (directory / ".shared" / "linked-target.yaml").write_text(account("acct-linked"))
    os.symlink(".shared/linked-target.yaml", directory / "linked.yaml")


def _linked_dir(directory: pathlib.Path, outside: pathlib.Path) -> None:
    """A projected volume's layout, and a loop through it: ``shown -> .volume/data``
    (a hidden directory) and ``again -> .volume/data`` and ``.volume/data/up -> ..``,
    each real directory entered once: its account is read once, no duplicate."""
    data = directory / ".volume" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "acct.yaml").write_text(account("acct-linked-dir"))
    os.symlink("..", data / "up")
    os.symlink(".volume/data", directory / "shown")
    os.symlink(".volume/data", directory / "again")


ENTRIES = {
    "dev-zero": Entry(_link("zero.yaml", "/dev/zero"), {"zero.yaml": "leads outside"}),
    "dev-urandom": Entry(_link("urandom.yaml", "/dev/urandom"), {"urandom.yaml": "leads outside"}),
    "device": Entry(_device, {"device.yaml": "is a character device"}, root_only=True),
    "fifo": Entry(_fifo, {"fifo.yaml": "is a FIFO"}),
    "socket": Entry(_socket, {"socket.yaml": "is a socket"}),
    # Not a file: its directory is not entered, and the account in it is never read.
    "dir-outside": Entry(_link("outdir.yaml", lambda o: o / "dir"), {}),
    "file-outside": Entry(
        _link("outfile.yaml", lambda o: o / "stolen.yaml"), {"outfile.yaml": "leads outside"}
    ),
    "loop-self": Entry(_link("self.yaml", "self.yaml"), {"self.yaml": "symlink loop"}),
    "loop-pair": Entry(_loop_pair, {"loop-a.yaml": "symlink loop", "loop-b.yaml": "symlink loop"}),
    "dir-loop": Entry(_link("loop.d", "."), {}),  # a directory that contains itself
    "dangling": Entry(_link("dangling.yaml", "nowhere.yaml"), {"dangling.yaml": "does not exist"}),
    "unreadable": Entry(
        _write("unreadable.yaml", account("acct-unreadable"), 0o000),
        {"unreadable.yaml": "Permission denied"},
    ),
    "non-utf8-name": Entry(_write(b"caf\xe9.yaml", account("acct-latin")), {}, ("acct-latin",)),
    "non-utf8-dir": Entry(_write(b"dir\xff/acct.yaml", account("acct-bytes")), {}, ("acct-bytes",)),
    "non-utf8-bad": Entry(_write(b"bad\xe9.yaml", "a: [\n"), {"bad\udce9.yaml": "invalid YAML"}),
    # One line of exactly 4 MiB: read and parsed (a schema error: it declares nothing).
    "huge-line": Entry(
        _write("huge.yaml", "x: " + "a" * (4 * MIB - 4) + "\n"), {"huge.yaml": "unknown kind"}
    ),
    "sparse-3gib": Entry(_sparse, {"sparse.yaml": "larger than 4 MiB"}),
    "empty": Entry(_write("empty.yaml", ""), {}),
    "dir-named-yaml": Entry(
        _write("dir.yaml/acct.yaml", account("acct-dir-yaml")), {}, ("acct-dir-yaml",)
    ),
    "inside-link": Entry(_linked, {}, ("acct-linked",)),
    "inside-dir-link": Entry(_linked_dir, {}, ("acct-linked-dir",)),
    "key-duplicate": Entry(
        _write("key-dup.yaml", f"{account('acct-dup')}{KEY}: 1\n{KEY}: 2\n"),
        {"key-dup.yaml": "duplicate key"},
    ),
    "key-tag": Entry(
        _write("key-tag.yaml", f"{HEADER}kind: Account\nmetadata: {{name: !{KEY} a}}\n"),
        {"key-tag.yaml": "unsupported YAML tag"},
    ),
    "key-alias": Entry(_write("key-alias.yaml", f"a: *{KEY}\n"), {"key-alias.yaml": "alias"}),
    "key-bool": Entry(
        _write("key-bool.yaml", f"a: !!bool {KEY}\n"), {"key-bool.yaml": "not a valid boolean"}
    ),
}
VALID = ("acct-0", "acct-1", "acct-2")


def available(names: list[str]) -> list[str]:
    return [n for n in names if not ENTRIES[n].root_only or os.geteuid() == 0]


def make_tree(decls: pathlib.Path, outside: pathlib.Path, names: list[str], sub: str = "") -> None:
    """A valid tree (the global, three accounts) with the entries ``names`` in ``decls/sub``."""
    decls.mkdir(parents=True, exist_ok=True)
    (decls / "global.yaml").write_text(GLOBAL)
    for i in range(len(VALID)):
        (decls / f"acct-{i}.yaml").write_text(account_file(i, 0.5, 100))
    make_outside(outside)
    (decls / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        ENTRIES[name].make(decls / sub, outside)


def make_outside(outside: pathlib.Path) -> None:
    """A sentinel directory outside DIR and OUT: declarations a link could steal, and
    files a write through a link would overwrite."""
    if outside.exists():
        return
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "acct.yaml").write_text(account("stolen-dir"))
    (outside / "stolen.yaml").write_text(account("stolen-file"))
    (outside / "victim").mkdir()
    for name in ("integration-settings.yaml", "openai.json", "image_generation.json"):
        (outside / "victim" / name).write_text("victim\n")
    (outside / "victim-file.json").write_text("victim\n")


def expected(names: list[str], sub: str = "") -> tuple[dict[str, str], set[str]]:
    errors: dict[str, str] = {}
    accounts = set(VALID)
    for name in names:
        errors.update({os.path.join(sub, p): text for p, text in ENTRIES[name].errors.items()})
        accounts.update(ENTRIES[name].accounts)
    return errors, accounts


def state(top: pathlib.Path, skip: pathlib.Path | None = None) -> dict[bytes, tuple[object, ...]]:
    """Every path under ``top`` (but ``skip``): kind, mode, size, mtime, and the content's
    digest or the link's target; nothing followed, no FIFO opened."""
    out: dict[bytes, tuple[object, ...]] = {}
    top_b, skip_b = os.fsencode(top), os.fsencode(skip) if skip else None
    for directory, dirs, files in os.walk(top_b):
        if skip_b is not None:
            dirs[:] = [d for d in dirs if os.path.join(directory, d) != skip_b]
        for name in dirs + files:
            path = os.path.join(directory, name)
            st_ = os.lstat(path)
            extra: object = None
            if os.path.islink(path):
                extra = os.readlink(path)
            elif os.path.isfile(path) and st_.st_size <= 8 * MIB and st_.st_mode & 0o444:
                with open(path, "rb") as fh:
                    extra = hashlib.sha256(fh.read()).hexdigest()
            rel = os.path.relpath(path, top_b)
            out[rel] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, extra)
    return out


def error_lines(text: str) -> dict[str, str]:
    """``file: message`` of every ``file:line: error: message`` printed."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"(.+?):(\d+): error: (.*)", line)
        if m:
            found[m.group(1)] = m.group(3)
    return found


def assert_errors_name(text: str, root: str, errors: dict[str, str]) -> None:
    printed = error_lines(text)
    for rel, message in errors.items():
        path = shown(os.path.normpath(os.path.join(root, rel)))
        assert path in printed, f"no error for {path} in:\n{text[-3000:]}"
        assert message in printed[path], (path, printed[path])
        assert printed[path].strip(), path


def written(out: pathlib.Path) -> set[str]:
    return {
        p.parent.name
        for p in out.glob("*/openai.json")
        if p.is_file() and not p.is_symlink() and not p.parent.is_symlink()
    }


def assert_no_key_in_outputs(out: pathlib.Path) -> None:
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert_no_key(path.read_bytes().decode(errors="replace"), str(path))


@pytest.fixture
def confined_tmp() -> Iterator[pathlib.Path]:
    """A temporary directory torn down even when it holds a 000 file and a FIFO."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def test_hostile_tree_through_every_command(confined_tmp: pathlib.Path, figures: Figures) -> None:
    """Every hostile entry at once, through validate, reconcile (twice: the second replays),
    render (as a user, and as the Argo CD plugin runs it: ``render .`` in the checkout) and get."""
    decls, out, outside = confined_tmp / "decls", confined_tmp / "out", confined_tmp / "outside"
    names = available(sorted(ENTRIES))
    make_tree(decls, outside, names)
    errors, accounts = expected(names)
    before = state(confined_tmp, skip=out)

    validate = run("validate", decls)
    assert validate.code == 1
    assert_errors_name(validate.stdout, str(decls), errors)
    as_json = json.loads(run("validate", decls, "-o", "json").stdout)
    files = {shown(f["file"]) for f in as_json["findings"] if f["severity"] == "error"}
    assert {shown(os.path.join(str(decls), rel)) for rel in errors} <= files

    first = run("reconcile", decls, "--output-dir", out)
    assert first.code == 1
    assert_errors_name(first.stderr, str(decls), errors)
    assert written(out) == accounts, first.stderr[-3000:]
    again = run("reconcile", decls, "--output-dir", out)
    assert again.code == 1
    assert_errors_name(again.stderr, str(decls), errors)

    render = run("render", decls)
    assert render.code == 1
    assert_errors_name(render.stderr, str(decls), errors)
    rendered = set(re.findall(r"^  namespace: (\S+)$", render.stdout, re.M))
    assert rendered == accounts
    plugin = run("render", ".", cwd=decls)  # deploy/gitops/argocd-plugin.yaml
    assert plugin.code == 1 and plugin.stdout == render.stdout
    assert_errors_name(plugin.stderr, ".", errors)

    got = run("get", "acct-0", "-d", decls, "--output-dir", out)
    assert got.code == 0 and "acct-0 (free)" in got.stdout, got.text

    assert state(confined_tmp, skip=out) == before, "something outside OUT changed"
    assert_no_key_in_outputs(out)
    figures["entries"] = len(names)
    figures["refused files"] = len(errors)
    figures["validate seconds"] = round(validate.seconds, 2)
    figures["reconcile seconds"] = round(first.seconds, 2)
    figures["accounts written"] = len(accounts)


def test_reading_is_bounded(tmp_path: pathlib.Path, catalog: object, figures: Figures) -> None:
    """Bytes actually read (the process's rchar): a 3 GiB sparse file costs the limit plus one
    byte; /dev/zero, a FIFO and a device behind a name cost none, and nothing blocks."""
    decls, outside = tmp_path / "decls", tmp_path / "outside"
    names = available(["sparse-3gib", "dev-zero", "fifo", "device", "dev-urandom"])
    make_tree(decls, outside, names)
    limit = documents.MAX_FILE_BYTES
    reader = reading.Reader()
    before = _rchar()
    overhead = _rchar() - before  # reading /proc/self/io counts too
    before = _rchar()
    assert len(reader.read(str(decls / "sparse.yaml"), str(decls), limit)) == limit + 1
    sparse = _rchar() - before - overhead
    refused = {}
    for rel in ("zero.yaml", "urandom.yaml", "fifo.yaml", *(["device.yaml"] * ("device" in names))):
        before = _rchar()
        with pytest.raises(reading.Refused):
            reader.read(str(decls / rel), str(decls), limit)
        refused[rel] = _rchar() - before - overhead
    loaded = loading.load_file(catalog, decls, "sparse.yaml", str(decls))  # type: ignore[arg-type]
    assert [e.message for e in loaded.errors] == ["file is larger than 4 MiB"]
    assert sparse == limit + 1
    assert set(refused.values()) == {0}, refused
    figures["bytes read of a 3 GiB file"] = sparse
    figures["bytes read of /dev/zero, a FIFO, a device"] = max(refused.values())


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])


def test_watch_survives_a_hostile_tree(confined_tmp: pathlib.Path, figures: Figures) -> None:
    """A running ``watch``: every hostile entry appears; each is reported by name, the process
    stays up, valid accounts among them are written, and a later valid change is written."""
    decls, out, outside = confined_tmp / "decls", confined_tmp / "out", confined_tmp / "outside"
    make_tree(decls, outside, [])
    names = available(sorted(ENTRIES))
    errors, accounts = expected(names)
    log = confined_tmp / "watch.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(CLI), "watch", str(decls), "--output-dir", str(out), "--resync", "3600"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=_confine,
            env=_ENV,
        )
    try:
        text = lambda: log.read_bytes().decode(errors="replace")  # noqa: E731
        until(lambda: "start:" in text(), "the first pass", TIMEOUT, 0.05, ignoring=MIDWRITE)
        before = state(confined_tmp, skip=out)
        started = time.monotonic()
        for name in names:
            ENTRIES[name].make(decls, outside)
        made = state(confined_tmp, skip=out)
        until(
            lambda: (
                proc.poll() is None
                and all(shown(str(decls / rel)) in error_lines(text()) for rel in errors)
            ),
            "every hostile file reported",
            TIMEOUT,
            0.05,
            ignoring=MIDWRITE,
        )
        reported = time.monotonic() - started
        assert proc.poll() is None, text()[-3000:]
        assert_errors_name(text(), str(decls), errors)
        until(
            lambda: written(out) == accounts,
            "the valid accounts among them",
            TIMEOUT,
            0.05,
            ignoring=MIDWRITE,
        )
        # A later valid change is still written.
        (decls / "acct-1.yaml").write_text(account_file(1, 1.5, 777))
        until(
            lambda: json.loads((out / "acct-1" / "openai.json").read_text())["max_tokens"] == 777,
            "a later change",
            TIMEOUT,
            0.05,
            ignoring=MIDWRITE,
        )
        assert proc.poll() is None, text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, text()[-3000:]
    assert "Traceback" not in text()
    assert_no_key(text(), "watch log")
    after = state(confined_tmp, skip=out)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert {p for p in changed if not p.startswith(b"decls")} <= {b"watch.log"}, changed
    assert set(after) - set(made) <= {b"watch.log"}
    assert_no_key_in_outputs(out)
    figures["seconds to report every hostile file"] = round(reported, 2)


def _outside_links(out: pathlib.Path, outside: pathlib.Path) -> None:
    """OUT as someone left it: each way a write could leave OUT, or block."""
    out.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "victim", out / "acct-0")  # a namespace directory
    (out / "acct-1").mkdir(exist_ok=True)
    os.symlink(outside / "victim-file.json", out / "acct-1" / "openai.json")  # an output file
    (out / "acct-2").mkdir(exist_ok=True)
    os.mkfifo(out / "acct-2" / "image_generation.json")  # a FIFO as an output file


def test_hostile_output_directory(confined_tmp: pathlib.Path, figures: Figures) -> None:
    decls, out, outside = confined_tmp / "decls", confined_tmp / "out", confined_tmp / "outside"
    make_tree(decls, outside, [])
    (decls / "acct-3.yaml").write_text(account("acct-3"))
    _outside_links(out, outside)
    (out / "acct-3").write_text("not a directory\n")
    (outside / "state").mkdir()
    os.symlink(outside / "state", out / ".settings-controller")  # the record directory
    # A writer that died mid-write: its mark is behind the symlinked record directory
    # (removing it would be a write outside), its temporary file behind a symlinked one.
    dead = _dead_pid()
    (outside / "state" / f"writer.{dead}").write_text("")
    (outside / "victim" / f".openai.json.{dead}.tmp").write_text("victim\n")
    before = state(outside)

    ran = run("reconcile", decls, "--output-dir", out)
    assert ran.code == 1
    printed = {line.split(": error: ")[0]: line for line in ran.stderr.splitlines()}
    for name, what in (
        ("acct-0", "is a symlink"),
        ("acct-3", "is a regular file, not a directory"),
        (".settings-controller", "is a symlink"),
    ):
        assert what in printed.get(str(out / name), ""), (name, ran.stderr[-2000:])
    # Replaced, never followed: the link and the FIFO are now regular outputs.
    for rel in ("acct-1/openai.json", "acct-2/image_generation.json"):
        assert (out / rel).is_file() and not (out / rel).is_symlink(), rel
        json.loads((out / rel).read_text())
    assert written(out) == {"acct-1", "acct-2"}  # acct-0's and acct-3's places are refused

    # The record through a real directory, but its database a symlink: refused too.
    os.unlink(out / ".settings-controller")
    (out / ".settings-controller").mkdir()
    os.symlink(outside / "state.sqlite", out / ".settings-controller" / "state.sqlite")
    ran = run("reconcile", decls, "--output-dir", out)
    assert (
        ran.code == 1
        and f"{out}/.settings-controller/state.sqlite: error: is a symlink" in ran.stderr
    )
    # The record fixed, acct-1 recorded; then its directory swapped for a symlink and
    # its declaration deleted: removing its outputs follows no link either.
    os.unlink(out / ".settings-controller" / "state.sqlite")
    assert run("reconcile", decls, "--output-dir", out).code == 1  # acct-0, acct-3 refused
    shutil.rmtree(out / "acct-1")
    os.symlink(outside / "victim", out / "acct-1")
    (decls / "acct-1.yaml").unlink()
    ran = run("reconcile", decls, "--output-dir", out)
    assert ran.code == 1 and f"{out}/acct-1: error: is a symlink" in ran.stderr, ran.stderr
    # Once the links are gone, everything converges.
    for name in ("acct-0", "acct-1", "acct-3"):
        os.unlink(out / name)
    assert run("reconcile", decls, "--output-dir", out).code == 0
    assert written(out) == {"acct-0", "acct-2", "acct-3"}

    assert state(outside) == before, "something outside OUT changed"
    assert sorted(os.listdir(confined_tmp)) == ["decls", "out", "outside"]
    figures["hostile places in OUT"] = 7


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_get_never_reads_a_record_from_outside_out(confined_tmp: pathlib.Path) -> None:
    """``get -d DIR --output-dir OUT`` reads the files a record lists: a record reached
    through a symlink is not read, and a record listing files outside DIR is not followed."""
    decls, out, outside = confined_tmp / "decls", confined_tmp / "out", confined_tmp / "outside"
    make_tree(decls, outside, [])
    assert run("reconcile", decls, "--output-dir", out).code == 0
    # Declarations an attacker would have get show instead: model gpt-4.1.
    (outside / "evil.yaml").write_text(
        GLOBAL.replace("gpt-4o-mini", "gpt-4.1") + "---\n" + account_file(0, 0.5, 100)
    )
    evil = os.path.relpath(outside / "evil.yaml", decls)
    fake = outside / "fake-state"
    fake.mkdir()
    with contextlib.closing(sqlite3.connect(fake / "state.sqlite")) as db:
        db.execute("CREATE TABLE records (namespace TEXT, account TEXT, sources TEXT, files TEXT)")
        db.execute(
            "INSERT INTO records VALUES ('acct-0', 'acct-0', ?, '{}')", (json.dumps([evil]),)
        )
        db.commit()
    real = out / ".settings-controller"
    real.rename(out / ".real-state")
    os.symlink(fake, real)
    ran = run("get", "acct-0", "openai", "-d", decls, "--output-dir", out, "-o", "json")
    assert ran.code == 0 and json.loads(ran.stdout)["model"] == "gpt-4o-mini", ran.text
    # The same record, in OUT itself.
    os.unlink(real)
    (out / ".real-state").rename(real)
    with contextlib.closing(sqlite3.connect(real / "state.sqlite")) as db:
        db.execute("UPDATE records SET sources = ? WHERE account = 'acct-0'", (json.dumps([evil]),))
        db.commit()
    ran = run("get", "acct-0", "openai", "-d", decls, "--output-dir", out, "-o", "json")
    assert ran.code == 0 and json.loads(ran.stdout)["model"] == "gpt-4o-mini", ran.text


@hypothesis.settings(
    max_examples=max(4, fuzz_budget() // 40),
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(
    names=st.lists(
        st.sampled_from(available(sorted(ENTRIES))), min_size=1, max_size=6, unique=True
    ),
    sub=st.sampled_from(["", "nested", "nested/deeper"]),
)
def test_mixes_of_hostile_entries(names: list[str], sub: str) -> None:
    """Any mix, at any depth: validate and reconcile name exactly the refused files, write
    every valid account, and change nothing outside OUT."""
    top = pathlib.Path(tempfile.mkdtemp(prefix="hostile-mix-"))
    try:
        decls, out, outside = top / "decls", top / "out", top / "outside"
        make_tree(decls, outside, names, sub)
        errors, accounts = expected(names, sub)
        before = state(top, skip=out)
        validate = run("validate", decls)
        reconcile = run("reconcile", decls, "--output-dir", out)
        for ran, stream in ((validate, validate.stdout), (reconcile, reconcile.stderr)):
            assert ran.code == (1 if errors else 0), ran.text[-2000:]
            assert_errors_name(stream, str(decls), errors)
            named = {p for p in error_lines(stream)}
            assert named == {shown(str(decls / rel)) for rel in errors}, named
        assert written(out) == accounts
        assert state(top, skip=out) == before
        assert_no_key_in_outputs(out)
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_out_itself_may_be_a_symlink(confined_tmp: pathlib.Path) -> None:
    """The user's own choice of OUT (a symlink to a volume, say) is followed; only what
    lies under it is not. Declarations reached through a symlinked DIR are read too."""
    decls, outside = confined_tmp / "decls", confined_tmp / "outside"
    make_tree(decls, outside, [])
    (confined_tmp / "volume").mkdir()
    os.symlink(confined_tmp / "volume", confined_tmp / "out")
    os.symlink(decls, confined_tmp / "checkout")
    for _ in range(2):  # written, then unchanged (the record read back through OUT's link)
        ran = run("reconcile", confined_tmp / "checkout", "--output-dir", confined_tmp / "out")
        assert ran.code == 0, ran.stderr
    assert written(confined_tmp / "volume") == set(VALID)
    assert (confined_tmp / "volume" / ".settings-controller" / "state.sqlite").is_file()
    ran = run(
        "get", "acct-1", "-d", confined_tmp / "checkout", "--output-dir", confined_tmp / "out"
    )
    assert ran.code == 0 and "acct-1 (pro)" in ran.stdout, ran.text
