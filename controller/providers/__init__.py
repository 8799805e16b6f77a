"""Provider checks: the HTTP calls that verify platform keys against their providers.

Shared by file mode (``settings-controller test-connection``) and cluster mode
(``controller.cluster.connections``); imports neither. What an answer means is
decided by ``controller.core.connections``; this package only makes the calls.
"""
