"""Generators of the manifests in ``deploy/`` (``make manifests``, ``settings-controller crds``).

``crds`` builds the CustomResourceDefinitions from ``schemas/``, ``policies`` the
ValidatingAdmissionPolicies (their CEL from ``celrules``). They read the pure core
only; the operator's runtime (``controller.cluster``) never imports them: what they
generate reaches a cluster as YAML, applied by an admin.
"""
