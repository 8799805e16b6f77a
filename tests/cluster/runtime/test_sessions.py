"""The request URL and headers the session prepares once are the ones it would build per call."""

from __future__ import annotations

import pytest
import yarl

from controller.cluster.runtime import sessions


def _session(server: str = "https://10.0.0.1:6443", token: str | None = "t0") -> sessions.Session:
    return sessions.Session(server, False, token, None, None, 30.0)


@pytest.mark.parametrize(
    ("server", "path", "params"),
    [
        (
            "https://10.0.0.1:6443",
            "/api/v1/namespaces/a-1/configmaps/integration-settings",
            {"fieldManager": "settings-controller", "force": "true"},
        ),
        ("https://10.0.0.1:6443", "/apis/integrations.igny8.com/v1alpha1/accounts", None),
        (
            "https://10.0.0.1:6443",
            "/api/v1/configmaps",
            {"fieldSelector": "metadata.name=integration-settings", "limit": "500"},
        ),
        (
            "https://10.0.0.1:6443",
            "/api/v1/namespaces",
            {"labelSelector": "integrations.igny8.com/plan", "continue": "eyJ2Ijo+/=="},
        ),
        # Not plain: quoted or normalised as aiohttp would.
        ("https://10.0.0.1:6443", "/api/v1/namespaces/a b/configmaps/x%y", {"q": "ä &="}),
        ("https://10.0.0.1:6443", "/api/v1/./namespaces/../x", None),
        ("https://K8S.example:443/prefix", "/api/v1/namespaces", {"limit": "1"}),
        ("https://[::1]:6443", "/api/v1/namespaces/a/secrets/b", {"fieldManager": "m"}),
        ("https://user:pw@10.0.0.1:6443/k8s", "/api/v1/namespaces/a", {"limit": "2"}),
        ("https://10.0.0.1:443", "/api/v1/namespaces/a", None),
        ("https://10.0.0.1:6443", "", None),
        ("https://10.0.0.1:6443", "/api/v1/", {"a": "b"}),
    ],
)
def test_the_url_is_the_one_aiohttp_would_build(
    server: str, path: str, params: dict[str, str] | None
) -> None:
    session = _session(server)
    expected = yarl.URL(session.server + path).extend_query(params or {})
    for _ in range(2):  # built, then from the query cache
        url = session._url(path, params)
        assert url == expected
        assert str(url) == str(expected)
        assert url.raw_path_qs == expected.raw_path_qs


def test_headers_follow_the_token() -> None:
    session = _session()
    first = session._headers("application/json")
    assert first == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer t0",
    }
    assert session._headers("application/apply-patch+yaml")["Content-Type"] == (
        "application/apply-patch+yaml"
    )
    session._token = "t1"  # an exec plugin's or token file's new credential
    assert session._headers("application/json")["Authorization"] == "Bearer t1"
    assert "Authorization" not in _session(token=None)._headers("application/json")
