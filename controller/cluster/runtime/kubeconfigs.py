"""``$KUBECONFIG`` read as kubectl reads it, for every client here (``get``, the operator).

lightkube's ``KubeConfig.from_env`` takes the variable as one file name; kubectl
(client-go's loading rules) takes a list, separated as ``PATH`` is:

* an empty value is unset: ``~/.kube/config``;
* files of the list that do not exist are skipped (so are empty entries and repeats);
* the files are merged: the first to name a cluster, user or context wins it, and
  ``current-context`` comes from the first file that sets one;
* a relative path inside a file (a CA, a client certificate, a token file, an exec
  plugin given with a ``/``) is relative to the file it is written in.

The in-cluster ServiceAccount still comes first, as lightkube's ``from_env`` has it.
Messages name files and problems, never what a file holds (it may hold a token).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import yaml
from lightkube import KubeConfig
from lightkube.core import exceptions

DEFAULT = "~/.kube/config"
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
# Fields that name a file, per section.
_FILES = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


def from_env() -> KubeConfig:
    """The in-cluster ServiceAccount, else ``$KUBECONFIG`` (a list), else ``~/.kube/config``."""
    try:
        return KubeConfig.from_service_account()
    except exceptions.ConfigError:
        return from_list(os.environ.get("KUBECONFIG", ""))


def paths(value: str) -> list[pathlib.Path]:
    """The files a ``$KUBECONFIG`` value names, in order, each once; the default if empty."""
    listed = [p for p in value.split(os.pathsep) if p] or [DEFAULT]
    return [pathlib.Path(p).expanduser() for p in dict.fromkeys(listed)]


def from_file(path: pathlib.Path) -> KubeConfig:
    """One kubeconfig, as ``--kubeconfig FILE`` names it (kubectl: the file must exist);
    ConfigError naming the file and the problem, never its content."""
    path = path.expanduser()
    if not path.exists():
        raise exceptions.ConfigError(f"Configuration file {path} not found")
    if not path.is_file():
        raise exceptions.ConfigError(f"{path}: not a regular file")
    return _merge([path])


def from_list(value: str) -> KubeConfig:
    """The merge of the files ``value`` names that exist; ConfigError if none does."""
    files = [p for p in paths(value) if p.is_file()]
    if not files:
        named = ", ".join(str(p) for p in paths(value))
        raise exceptions.ConfigError(f"Configuration file {named} not found")
    return _merge(files)


def _merge(files: list[pathlib.Path]) -> KubeConfig:
    merged: dict[str, Any] = {section: [] for section, _ in _SECTIONS}
    taken: dict[str, set[str]] = {section: set() for section, _ in _SECTIONS}
    for path in files:
        conf = _read(path)
        if not merged.get("current-context") and conf.get("current-context"):
            merged["current-context"] = conf["current-context"]
        for section, item in _SECTIONS:
            entries = conf.get(section) or []
            if not isinstance(entries, list):
                raise exceptions.ConfigError(f"{path}: {section} is not a list")
            for entry in entries:
                name = entry.get("name") if isinstance(entry, dict) else None
                if not isinstance(name, str) or name in taken[section]:
                    continue  # unnamed (as kubectl, ignored) or named by an earlier file
                taken[section].add(name)
                merged[section].append(_absolute(entry, item, path.parent))
    try:
        return KubeConfig.from_dict(merged, fname=files[0])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise exceptions.ConfigError(f"not a kubeconfig ({type(e).__name__})") from None


def _read(path: pathlib.Path) -> dict[str, Any]:
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise exceptions.ConfigError(f"{path}: not YAML{at}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise exceptions.ConfigError(f"{path}: not YAML") from None
    except OSError as e:
        raise exceptions.ConfigError(f"{path}: {e.strerror or e}") from None
    if conf is None:
        return {}  # an empty file adds nothing, as for kubectl
    if not isinstance(conf, dict):
        raise exceptions.ConfigError(f"{path}: not a kubeconfig (not a mapping)")
    return conf


def _absolute(entry: dict[str, Any], item: str, base: pathlib.Path) -> dict[str, Any]:
    """``entry`` with the relative file names in it made relative to ``base``."""
    body = entry.get(item)
    if not isinstance(body, dict):
        return entry
    body = dict(body)
    for field in _FILES.get(item, ()):
        value = body.get(field)
        if isinstance(value, str) and value and not os.path.isabs(value):
            body[field] = str(base / os.path.expanduser(value))
    plugin = body.get("exec")
    if isinstance(plugin, dict):
        command = plugin.get("command")
        # A bare name is looked up on PATH; only a path is relative to the file.
        if isinstance(command, str) and "/" in command and not os.path.isabs(command):
            body["exec"] = {**plugin, "command": str(base / command)}
    return {**entry, item: body}
