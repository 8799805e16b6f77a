"""kopf's credentials come from the same kubeconfig parsing as the write client's."""

from __future__ import annotations

import base64
import pathlib

import yaml

from controller.cluster import logins


def kubeconfig(tmp_path: pathlib.Path, user: dict[str, object]) -> pathlib.Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority-data": base64.b64encode(b"CA").decode(),
                        },
                    }
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}
                ],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_token_file_is_read_at_each_login(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    path = kubeconfig(tmp_path, {"tokenFile": str(token)})
    info = logins.connection(path)
    assert info is not None and info.token == "first" and info.ca_data == b"CA"
    assert info.server == "https://127.0.0.1:6443" and info.default_namespace == "ns"
    token.write_text("rotated\n")  # kopf logs in again on a 401
    again = logins.connection(path)
    assert again is not None and again.token == "rotated"


def test_client_certificates_and_basic_auth(tmp_path: pathlib.Path) -> None:
    cert = base64.b64encode(b"CERT").decode()
    key = base64.b64encode(b"KEY").decode()
    info = logins.connection(
        kubeconfig(tmp_path, {"client-certificate-data": cert, "client-key-data": key})
    )
    assert info is not None and info.certificate_data == b"CERT" and info.private_key_data == b"KEY"
    assert info.token is None
    basic = logins.connection(kubeconfig(tmp_path, {"username": "a", "password": "b"}))
    assert basic is not None and (basic.username, basic.password) == ("a", "b")


def test_exec_plugins_are_left_to_kopf(tmp_path: pathlib.Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "true"}}
    assert logins.connection(kubeconfig(tmp_path, user)) is None
