"""File mode: YAML declarations in a directory, ConfigMap manifests and JSON files out.

Reading: ``reading`` opens files only inside the declarations directory,
``documents`` parses YAML with line numbers, ``loading`` turns files into
declarations. Writing: ``manifests`` lays out the ConfigMap YAML, ``writing``
replaces files atomically (never through a symlink) and sweeps what a killed
writer left, ``records`` is the SQLite record of what was written from which
files, ``outputs`` brings each account's directory to what a pass rendered.
A pass: ``reconciling`` runs one and ``reports`` what it found; ``snapshots``
keeps the last complete pass and replays it when nothing changed; ``watching``
keeps passes coming.
"""
