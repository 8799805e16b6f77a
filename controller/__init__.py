"""settings-controller: per-account effective settings for AI integrations.

``controller.core`` is the pure merge engine (no I/O). ``controller.files`` is
file mode (YAML in, ConfigMap manifests and JSON out) and ``controller.cluster``
is cluster mode (a kopf operator); the two adapters never import each other.
"""
