"""The egress guard, loaded into every operator process the tests start (``PYTHONPATH``).

No test may send traffic off this machine. When ``SETTINGS_CONTROLLER_EGRESS_LOG``
names a file, an audit hook refuses every ``socket.connect`` to an address that
is not loopback or unspecified (and every name lookup of a host that is not ``localhost`` or a
loopback literal) with ``ConnectionRefusedError``, and appends the attempt to
that file. ``tests.operator.support.Operator.stop`` fails the test when it is
not empty. Unix sockets and loopback are allowed: the local control plane and
the local provider servers live there.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

_LOG = os.environ.get("SETTINGS_CONTROLLER_EGRESS_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _loopback(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): a local wildcard
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # The unspecified address is this machine too (a server binding 0.0.0.0, or a connect to it).
    return address.is_loopback or address.is_unspecified


def _refuse(what: str) -> None:
    assert _LOG is not None
    with open(_LOG, "a", encoding="utf-8") as fh:
        fh.write(what + "\n")
    raise ConnectionRefusedError(f"egress guard: {what}")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address and not _loopback(address[0]):
            _refuse(f"connect {address[0]}:{address[1] if len(address) > 1 else ''}")
    elif event == "socket.getaddrinfo" and not _loopback(args[0]):
        _refuse(f"getaddrinfo {args[0]}:{args[1]}")


if _LOG:
    sys.addaudithook(_hook)
