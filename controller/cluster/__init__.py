"""Cluster mode: the kopf operator, its CRDs and its writes, around the pure core.

Nothing here imports ``controller.files``; ``controller.core`` imports nothing
from here. The Kubernetes client sits behind ``clients`` alone.
"""
