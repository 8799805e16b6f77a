"""Connection checks against the providers: the HTTP calls that ask each provider whether it
accepts a platform key (``connections``).

Shared by file mode (``settings-controller test-connection``) and cluster mode
(``controller.cluster.connections``); imports neither. What an answer means is
decided by ``controller.core.connections``; this package only makes the calls.
"""
