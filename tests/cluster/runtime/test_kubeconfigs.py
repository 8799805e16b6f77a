"""``$KUBECONFIG`` as kubectl reads it: a list of files merged, an empty value unset."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import yaml
from lightkube.core import exceptions

from controller.cluster import logins
from controller.cluster.runtime import clients, kubeconfigs


def write(path: pathlib.Path, **conf: Any) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **conf}))
    return path


def cluster(name: str, server: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "cluster": {"server": server, **extra}}


def context(name: str, cluster_: str, user: str = "u") -> dict[str, Any]:
    return {"name": name, "context": {"cluster": cluster_, "user": user}}


USERS = [{"name": "u", "user": {"token": "t"}}]


@pytest.fixture
def two(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    a = write(
        tmp_path / "a",
        clusters=[cluster("c1", "https://a-c1:1")],
        users=USERS,
        contexts=[context("x", "c1")],
        **{"current-context": "x"},
    )
    b = write(
        tmp_path / "b",
        clusters=[cluster("c1", "https://b-c1:1"), cluster("c2", "https://b-c2:1")],
        users=[{"name": "u", "user": {"token": "other"}}],
        contexts=[context("x", "c2"), context("y", "c2")],
        **{"current-context": "y"},
    )
    return a, b


def joined(*paths: object) -> str:
    return os.pathsep.join(str(p) for p in paths)


def test_the_first_file_wins_each_name_and_the_current_context(
    two: tuple[pathlib.Path, pathlib.Path],
) -> None:
    a, b = two
    first = kubeconfigs.from_list(joined(a, b))
    conf = first.get()
    assert conf is not None and conf.context_name == "x"
    assert conf.cluster.server == "https://a-c1:1" and conf.user.token == "t"
    # What only the second file names is there too.
    other = first.get(context_name="y")
    assert other is not None and other.cluster.server == "https://b-c2:1"
    reversed_ = kubeconfigs.from_list(joined(b, a)).get()
    assert reversed_ is not None and reversed_.context_name == "y"
    assert reversed_.cluster.server == "https://b-c2:1"


def test_the_current_context_comes_from_the_first_file_that_sets_one(
    tmp_path: pathlib.Path, two: tuple[pathlib.Path, pathlib.Path]
) -> None:
    _, b = two
    plain = write(tmp_path / "plain", clusters=[cluster("c9", "https://p:1")], contexts=[])
    conf = kubeconfigs.from_list(joined(plain, b)).get()
    assert conf is not None and conf.context_name == "y"


def test_missing_files_empty_entries_and_repeats_are_skipped(
    tmp_path: pathlib.Path, two: tuple[pathlib.Path, pathlib.Path]
) -> None:
    a, b = two
    value = joined(tmp_path / "missing", "", a, a, tmp_path / "gone", b)
    assert kubeconfigs.paths(value)[1:] == [a, tmp_path / "gone", b]
    conf = kubeconfigs.from_list(value).get()
    assert conf is not None and conf.cluster.server == "https://a-c1:1"
    with pytest.raises(exceptions.ConfigError, match=r"missing.*gone.*not found"):
        kubeconfigs.from_list(joined(tmp_path / "missing", tmp_path / "gone"))


def test_an_empty_value_is_the_default_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, two: tuple[pathlib.Path, pathlib.Path]
) -> None:
    a, _ = two
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(a.read_text())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", "")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kubeconfigs.paths("") == [home / ".kube" / "config"]
    conf = clients.load_kubeconfig(None).get()
    assert conf is not None and conf.cluster.server == "https://a-c1:1"


def test_relative_paths_are_relative_to_their_own_file(
    tmp_path: pathlib.Path, two: tuple[pathlib.Path, pathlib.Path]
) -> None:
    a, _ = two
    elsewhere = write(
        tmp_path / "elsewhere" / "config",
        clusters=[cluster("c3", "https://e:1", **{"certificate-authority": "ca.crt"})],
        users=[
            {
                "name": "w",
                "user": {
                    "tokenFile": "token",
                    "exec": {"apiVersion": "v1", "command": "./plugin", "args": []},
                },
            },
            {"name": "p", "user": {"exec": {"apiVersion": "v1", "command": "gke-auth"}}},
        ],
        contexts=[context("z", "c3", "w")],
    )
    merged = kubeconfigs.from_list(joined(a, elsewhere))
    conf = merged.get(context_name="z")
    assert conf is not None
    base = tmp_path / "elsewhere"
    assert pathlib.Path(conf.abs_file(conf.cluster.certificate_auth)) == base / "ca.crt"
    assert pathlib.Path(conf.abs_file(conf.user.token_file)) == base / "token"
    assert conf.user.exec is not None and conf.user.exec.command == str(base / "plugin")
    assert merged.users["p"].exec is not None and merged.users["p"].exec.command == "gke-auth"


def test_a_broken_file_in_the_list_names_the_file_not_its_content(
    tmp_path: pathlib.Path, two: tuple[pathlib.Path, pathlib.Path]
) -> None:
    a, _ = two
    broken = tmp_path / "broken"
    broken.write_text("users:\n- name: u\n  user: {token: sk-live-0123456789abcdef\n")
    with pytest.raises(exceptions.ConfigError) as caught:
        kubeconfigs.from_list(joined(a, broken))
    assert str(caught.value).startswith(f"{broken}: not YAML at line")
    assert "0123456789" not in str(caught.value)
    listed = tmp_path / "listed"
    listed.write_text("- 1\n")
    with pytest.raises(exceptions.ConfigError, match="not a mapping"):
        kubeconfigs.from_list(joined(listed, a))


def test_the_operator_reads_the_list_the_same_way(
    monkeypatch: pytest.MonkeyPatch, two: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    a, b = two
    monkeypatch.setenv("KUBECONFIG", joined(tmp_path / "missing", a, b))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    login = logins.connection(None)
    assert login is not None and login.server == "https://a-c1:1" and login.token == "t"
    loaded = clients.load_kubeconfig(None).get()
    assert loaded is not None and loaded.cluster.server == "https://a-c1:1"


def test_one_named_kubeconfig_fails_naming_the_file_never_its_content(
    tmp_path: pathlib.Path,
) -> None:
    """Breakit2: ``get --kubeconfig FILE`` with an unclosed quote printed PyYAML's traceback,
    which quotes the token line. ``from_file`` (``--kubeconfig``) reads as the list does: a
    ConfigError naming the file; a FIFO is not opened (it would block)."""
    token = "kq7Zt2Lm9Xv4Rb8Nc3Wd6Yf1Hg5Jp0Ts"
    broken = tmp_path / "broken"
    broken.write_text(f'apiVersion: v1\nusers: [{{name: u, user: {{token: "{token}}}}}]\n')
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, problem in (
        (broken, "not YAML at line"),
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
        (tmp_path / "missing", "not found"),
    ):
        with pytest.raises(exceptions.ConfigError) as e:
            kubeconfigs.from_file(path)
        assert str(path) in str(e.value) and problem in str(e.value)
        assert token[:8] not in str(e.value) and "\n" not in str(e.value)
    good = write(tmp_path / "good", clusters=[cluster("c", "https://a")], users=USERS,
                 contexts=[context("x", "c")], **{"current-context": "x"})  # fmt: skip
    assert kubeconfigs.from_file(good).get().cluster.server == "https://a"
