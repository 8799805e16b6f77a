"""JSON too deep for Python's decoder: every list and watch the operator reads survives it."""

from __future__ import annotations

import json

import pytest

from controller.cluster.runtime import decoding, records
from controller.core import catalog as catalog_


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_loads_is_json_loads_for_ordinary_documents() -> None:
    doc = json.dumps({"kind": "List", "items": [{"a": [1, 2, {"b": 'x}]"{'}]}], "s": "[[[{{\\"})
    assert decoding.loads(doc) == json.loads(doc)
    assert decoding.loads(doc.encode()) == json.loads(doc)


def test_a_body_too_deep_for_the_decoder_keeps_everything_but_its_depths() -> None:
    deep = nested(5000)
    with pytest.raises(RecursionError):
        json.loads(deep)
    listing = (
        '{"items": [{"metadata": {"name": "good"}, "spec": {"x": "{[\\"]"}},'
        f'{{"metadata": {{"name": "bad"}}, "spec": {{"overrides": {deep}}}}}]}}'
    )
    decoded = decoding.loads(listing)
    good, bad = decoded["items"]
    assert good == {"metadata": {"name": "good"}, "spec": {"x": '{["]'}}
    assert bad["metadata"]["name"] == "bad"
    node, depth = bad["spec"]["overrides"], 5  # root, items, item, spec, overrides
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert node == decoding.MARKER and depth == decoding.FLATTEN_DEPTH + 1


@pytest.mark.parametrize("levels", [40, 600, 5000])
def test_the_core_refuses_a_deep_object_by_name_without_recursing(
    catalog: catalog_.Catalog, levels: int
) -> None:
    body = decoding.loads(
        '{"apiVersion": "integrations.igny8.com/v1alpha1", "kind": "IntegrationSettings",'
        '"metadata": {"name": "openai", "namespace": "acct-1", "uid": "u"},'
        f'"spec": {{"overrides": {{"deep": {nested(levels)}}}}}}}'
    )
    observed = records.observe(catalog, body)
    assert observed.declaration is None
    (problem,) = observed.problems
    assert "nested more than 32 levels deep" in problem.message
    assert str(problem.ref) == "IntegrationSettings acct-1/openai"
