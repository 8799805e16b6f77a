"""The output layer's own guarantees: manifests load back exactly, writes are atomic."""

from __future__ import annotations

import os
import pathlib

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import rendering
from controller.files import manifests, outputs, writing
from tests.filemode.outputs import unwritable

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
json_texts = st.dictionaries(
    st.text(max_size=10), st.text(max_size=30) | st.integers() | st.booleans(), max_size=5
).map(rendering.canonical_json)


@settings(max_examples=300, deadline=None)
@given(
    names,
    names,
    st.dictionaries(st.from_regex(r"[a-z_]{1,12}\.json", fullmatch=True), json_texts, max_size=3),
)
def test_manifest_loads_back_to_the_configmap(
    account: str, namespace: str, data: dict[str, str]
) -> None:
    manifest = rendering.configmap(account, namespace, data)
    assert yaml.safe_load(manifests.manifest_yaml(manifest)) == manifest


@pytest.mark.parametrize("name", ["true", "no", "123", "1e3", "null", "on"])
def test_names_yaml_would_misread_are_quoted(name: str) -> None:
    manifest = rendering.configmap(name, name, {"openai.json": "{}\n"})
    assert yaml.safe_load(manifests.manifest_yaml(manifest)) == manifest


def test_failed_write_leaves_the_old_file(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "openai.json"
    writing.write_atomic(target, "old\n")

    class Boom(Exception):
        pass

    class Exploding(str):
        def encode(self, *args: object, **kwargs: object) -> bytes:
            raise Boom

    with pytest.raises(Boom):
        writing.write_atomic(target, Exploding("new\n"))
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["openai.json"]  # no temp file left behind


def test_unwritable_output_directory_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    out = outputs.OutputDir(tmp_path / "out")
    out.write_account("a", "a", {"openai.json": "{}\n"}, ["x.yaml"])
    with unwritable(tmp_path / "out" / "a"):
        with pytest.raises(writing.OutputError, match="cannot write outputs"):
            out.write_account("a", "a", {"openai.json": '{"x":1}\n'}, ["x.yaml"])
        assert (tmp_path / "out" / "a" / "openai.json").read_text() == "{}\n"
