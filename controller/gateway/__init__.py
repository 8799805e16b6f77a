"""``settings-controller gateway``: an OpenAI-compatible proxy that authenticates a workload,
applies its account's effective settings (``core.enforcement``) and injects the platform key.

``sources`` is the seam (where identities, declarations and keys come from), ``local`` its
file-backed implementation, ``serving`` the HTTP side, ``metrics`` what it counts.
"""
