"""The patches of kopf's internals still fit the pinned kopf, and do what they say.

If kopf is upgraded and changes a patched function's shape, these fail first
(``install`` also refuses to run against a kopf it does not recognise).
"""

from __future__ import annotations

import inspect
import json

import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching

from controller.cluster import bodies, kopfpatches
from controller.core import catalog as catalog_


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_the_pinned_kopf_has_the_shapes_the_patches_replace() -> None:
    kopfpatches.install()
    kopfpatches.install()  # idempotent
    assert aiotoggles.ToggleSet.wait_for is kopfpatches._wait_for
    assert watching.infinite_watch is kopfpatches._lean_watch
    assert api.get is kopfpatches._get
    assert getattr(api, "json").loads is kopfpatches.loads  # noqa: B009
    # What the patches call on the originals.
    assert "url" in inspect.signature(api.request).parameters
    assert "method" in inspect.signature(api.request).parameters
    assert inspect.isasyncgenfunction(kopfpatches._original)


def test_loads_is_json_loads_for_ordinary_documents() -> None:
    doc = json.dumps({"kind": "List", "items": [{"a": [1, 2, {"b": 'x}]"{'}]}], "s": "[[[{{\\"})
    assert kopfpatches.loads(doc) == json.loads(doc)
    assert kopfpatches.loads(doc.encode()) == json.loads(doc)


def test_a_body_too_deep_for_the_decoder_keeps_everything_but_its_depths() -> None:
    deep = nested(5000)
    with pytest.raises(RecursionError):
        json.loads(deep)
    listing = (
        '{"items": [{"metadata": {"name": "good"}, "spec": {"x": "{[\\"]"}},'
        f'{{"metadata": {{"name": "bad"}}, "spec": {{"overrides": {deep}}}}}]}}'
    )
    decoded = kopfpatches.loads(listing)
    good, bad = decoded["items"]
    assert good == {"metadata": {"name": "good"}, "spec": {"x": '{["]'}}
    assert bad["metadata"]["name"] == "bad"
    node, depth = bad["spec"]["overrides"], 5  # root, items, item, spec, overrides
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert node == kopfpatches.MARKER and depth == kopfpatches.FLATTEN_DEPTH + 1


@pytest.mark.parametrize("levels", [40, 600, 5000])
def test_the_core_refuses_a_deep_object_by_name_without_recursing(
    catalog: catalog_.Catalog, levels: int
) -> None:
    body = kopfpatches.loads(
        '{"apiVersion": "integrations.igny8.com/v1alpha1", "kind": "IntegrationSettings",'
        '"metadata": {"name": "openai", "namespace": "acct-1", "uid": "u"},'
        f'"spec": {{"overrides": {{"deep": {nested(levels)}}}}}}}'
    )
    observed = bodies.observe(catalog, body)
    assert observed.declaration is None
    (problem,) = observed.problems
    assert "nested more than 32 levels deep" in problem.message
    assert str(problem.ref) == "IntegrationSettings acct-1/openai"
