"""Cluster mode: the operator around the pure core, in layers (import-linter holds them).

* ``hosting``: kopf as the process host (start-up, login, stop signals, exit).
* ``operating``: the ``Operator``: its caches, its queues, the one routes table
  (which change enqueues which key) and its named root tasks.
* ``connections`` (the connection checks) and ``reconciling`` (the accounts): the
  reconcilers, each a ``sync(key)`` on its own work queue; ``reporting``,
  ``statuses``, ``manifests``, ``conditions``, ``metrics`` what they write.
* ``runtime``: the operator's own client-go, below everything, kopf-free.

Nothing here imports ``controller.files``; ``controller.core`` imports nothing
from here. The Kubernetes client sits behind ``runtime.clients`` alone.
"""
