"""File mode: YAML declarations in a directory, ConfigMap manifests and JSON files out.

``documents`` parses YAML with line numbers, ``loading`` turns files into
declarations, ``outputs`` writes atomically and remembers what it wrote,
``reconciling`` runs a pass, ``watching`` keeps passes coming.
"""
