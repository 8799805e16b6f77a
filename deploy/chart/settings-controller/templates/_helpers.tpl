{{/*
Named templates of the settings-controller chart (written by hand; _generated.tpl holds
the ones read from kustomize: the Deployment's selector, the ServiceAccount's name).
*/}}

{{/*
The namespace of every namespaced object: namespaceOverride, else the release's. It is
written into the admission policies' CEL strings, so anything but a DNS label is refused
(`helm template -n 'x" || true || "'` would otherwise confine nobody).
*/}}
{{- define "settings-controller.namespace" -}}
{{- $ns := default .Release.Namespace .Values.namespaceOverride -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $ns) -}}
{{- fail (printf "namespace %q: not a DNS label (lower-case letters, digits and '-', at most 63)" $ns) -}}
{{- end -}}
{{- $ns -}}
{{- end }}

{{/* The operator's ServiceAccount: the identity its RBAC binds and its admission policies confine. */}}
{{- define "settings-controller.serviceAccountName" -}}
{{- $name := default (include "settings-controller.defaultServiceAccountName" .) .Values.serviceAccount.name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" $name) -}}
{{- fail (printf "serviceAccount.name %q: not a DNS subdomain" $name) -}}
{{- end -}}
{{- $name -}}
{{- end }}

{{/*
An object's labels besides its own (kustomize's, written literally beside this include),
as one map so that no key is written twice: commonLabels, then `extra` (podLabels, a
ServiceMonitor's additionalLabels) over them, then Helm's labels (not on pods) over
both; the keys in `own` are left out, so the chart's own labels win: a commonLabel can
neither change the Deployment's selector labels nor the namespace's pod-security level.
Called with (dict "root" . "own" (list KEY...) ["extra" MAP] ["pod" true]).
*/}}
{{- define "settings-controller.labels" -}}
{{- $root := .root -}}
{{- $out := dict -}}
{{- range $k, $v := $root.Values.commonLabels }}{{ $_ := set $out $k $v }}{{ end -}}
{{- range $k, $v := .extra }}{{ $_ := set $out $k $v }}{{ end -}}
{{- if not .pod -}}
{{- $_ := set $out "helm.sh/chart" (printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-") -}}
{{- $_ := set $out "app.kubernetes.io/instance" $root.Release.Name -}}
{{- $_ := set $out "app.kubernetes.io/managed-by" $root.Release.Service -}}
{{- $_ := set $out "app.kubernetes.io/version" ($root.Chart.AppVersion | toString) -}}
{{- end -}}
{{- range .own }}{{ $_ := unset $out . }}{{ end -}}
{{- with $out }}{{ toYaml . }}{{ end -}}
{{- end }}

{{/* repository:tag (the tag defaults to appVersion), or repository@digest. */}}
{{- define "settings-controller.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The operator flags the values set, after kustomize's args (the last spelling wins). A flag
is passed only when its value differs from the operator's default, so the default render
is exactly deploy/'s Deployment.
*/}}
{{- define "settings-controller.args" -}}
{{- if not .Values.leaderElection.enabled }}
- --leader-elect=false
{{- end }}
{{- with .Values.leaderElection.namespace }}
- --leader-election-namespace={{ . }}
{{- end }}
{{- with .Values.leaderElection.leaseDuration }}
- --leader-elect-lease-duration={{ . }}
{{- end }}
{{- with .Values.leaderElection.renewDeadline }}
- --leader-elect-renew-deadline={{ . }}
{{- end }}
{{- with .Values.leaderElection.retryPeriod }}
- --leader-elect-retry-period={{ . }}
{{- end }}
{{- with .Values.logLevel }}
- --log-level={{ . }}
{{- end }}
{{- with .Values.logFormat }}
- --log-format={{ . }}
{{- end }}
{{- if not .Values.metrics.secure }}
- --metrics-secure=false
{{- end }}
{{- if .Values.allowUnconfined }}
- --allow-unconfined
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
