"""The operator fixtures of tests/operator, for the cluster-mode breaks here."""

from tests.operator.conftest import installed

__all__ = ["installed"]
