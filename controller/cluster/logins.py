"""kopf's credentials, from the same kubeconfig parsing the write client uses.

One source of credentials for every request the operator makes: lightkube's
``KubeConfig`` (a file, ``$KUBECONFIG``, or the in-cluster ServiceAccount)
read here for kopf and in ``clients.Client.connect`` for the writes;
``$KUBECONFIG`` as kubectl reads it (a list of files, merged: ``kubeconfigs``). kopf
calls the login handler again whenever the API server answers 401, so a
rotated ServiceAccount token (a projected volume refreshes it on disk) is
picked up by re-reading the token file.
"""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import kopf
from lightkube import KubeConfig

from controller.cluster.runtime import kubeconfigs


def connection(kubeconfig: pathlib.Path | None) -> kopf.ConnectionInfo | None:
    """What kopf needs to connect; None for what only an exec plugin or auth provider serves."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else kubeconfigs.from_env()
    conf = config.get()
    if conf is None or conf.cluster is None or conf.user is None:
        return None
    cluster: Any = conf.cluster
    user: Any = conf.user
    if user.exec is not None or user.auth_provider:
        return None
    token = user.token
    if token is None and user.token_file:
        token = pathlib.Path(conf.abs_file(user.token_file)).read_text().strip()
    return kopf.ConnectionInfo(
        server=cluster.server,
        insecure=bool(cluster.insecure),
        ca_data=_data(cluster.certificate_auth_data),
        ca_path=_path(conf, cluster.certificate_auth),
        token=token,
        username=None if token else user.username,
        password=None if token else user.password,
        certificate_data=_data(user.client_cert_data),
        certificate_path=_path(conf, user.client_cert),
        private_key_data=_data(user.client_key_data),
        private_key_path=_path(conf, user.client_key),
        default_namespace=conf.namespace,
    )


def _data(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def _path(conf: Any, value: str | None) -> str | None:
    return str(conf.abs_file(value)) if value else None
