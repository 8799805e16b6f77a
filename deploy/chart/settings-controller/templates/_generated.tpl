# DO NOT EDIT: generated from `kubectl kustomize deploy/` by `make manifests`.
{{/* The Deployment's selector (immutable: never add a label to it). */}}
{{- define "settings-controller.selectorLabels" -}}
app.kubernetes.io/component: operator
app.kubernetes.io/name: settings-controller
{{- end }}

{{/* The ServiceAccount's name in deploy/rbac. */}}
{{- define "settings-controller.defaultServiceAccountName" -}}
settings-controller
{{- end }}
