"""The operator's own client-go: what any controller on this API server needs, nothing of
what this one decides.

``clients`` (one HTTP stack: ``sessions``, ``decoding``, ``correlating``,
``kubeconfigs``) reads and writes; ``following`` keeps a store current with a
list and a watch (``resources`` the custom kinds, ``generated`` the outputs,
``secrets`` the platform key Secrets, each as ``records``); ``queueing`` is the
work queue whose ``sync(key)`` returns a ``Result``; ``leases`` elects the
writer; ``supervising`` names the root tasks and stops the process when one dies.

The bottom layer of ``controller.cluster``: nothing here imports a reconciler,
the operator or its host, nor kopf (import-linter holds both).
"""
