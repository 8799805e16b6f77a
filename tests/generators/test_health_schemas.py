"""Each kind's own status schema and the Reason/Message columns, as generated into its CRD."""

from __future__ import annotations

import pytest

from controller.core import catalog as catalog_
from controller.generators import crds

OWN_FIELDS = {
    catalog_.GLOBAL: {"connections"},
    catalog_.ACCOUNT: {"usingGlobal", "connected"},
    catalog_.OVERRIDE: {"appliedFields", "connected"},
}


@pytest.mark.parametrize("kind", catalog_.KINDS)
def test_each_kind_has_its_own_status(catalog: catalog_.Catalog, kind: str) -> None:
    version = crds.crd(catalog, kind)["spec"]["versions"][0]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert set(status["properties"]) == {"observedGeneration", "conditions", *OWN_FIELDS[kind]}
    described = status["properties"]["conditions"]["items"]["properties"]["type"]["description"]
    assert "Reconciling" in described and "Stalled" in described


@pytest.mark.parametrize("kind", catalog_.KINDS)
def test_reason_and_message_columns(catalog: catalog_.Catalog, kind: str) -> None:
    columns = {c["name"]: c for c in crds.printer_columns(catalog, kind)}
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Message"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    assert columns["Message"]["priority"] == 1  # -o wide only
    assert "priority" not in columns["Reason"]
