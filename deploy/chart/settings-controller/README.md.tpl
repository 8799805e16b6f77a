# settings-controller Helm chart

<!-- DO NOT EDIT README.md: generated from README.md.tpl and values.yaml's `# --` comments by `make manifests`. -->

The operator, its CRDs, RBAC and admission policies: the objects of `kubectl kustomize
deploy/`, in the release namespace (or `namespaceOverride`). Requires Kubernetes 1.30+.

```sh
helm install settings-controller deploy/chart/settings-controller \
  --namespace settings-controller-system --create-namespace \
  --set image.repository=registry.example/settings-controller
```

**Identity.** The admission policies confine the operator's writes by its username,
`system:serviceaccount:<namespace>:<serviceAccount.name>`; the chart writes this
release's namespace and ServiceAccount into them, and the release namespace into the
list of namespaces no Account may claim. Install it into any namespace.

**One install per cluster.** CRDs, ClusterRoles and admission policies are
cluster-wide and keep their fixed names (`settings-controller-*`).

**CRDs.** Templates behind `crds.enabled`, so `helm upgrade` updates them, annotated
`helm.sh/resource-policy: keep` (`crds.keep`) so `helm uninstall` leaves them and the
declarations (cert-manager's answer). With `crds.enabled=false` apply them yourself:
`kubectl apply --server-side -k deploy/crd`.

**Upgrading from chart 0.1.0** (CRDs in `crds/`, which Helm never upgrades; every object
in `settings-controller-system` whatever the release namespace; the Namespace part of the
release): keep the namespace and the Namespace object, and let the release adopt the CRDs
(Helm 3.17+):

```sh
helm upgrade settings-controller deploy/chart/settings-controller --namespace default \
  --take-ownership --set namespaceOverride=settings-controller-system --set createNamespace=true
```

(`--namespace`: the release's, as `helm list -A` shows it.)

## Values

@@VALUES@@
