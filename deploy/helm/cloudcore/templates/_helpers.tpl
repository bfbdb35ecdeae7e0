{{/* Chart name. */}}
{{- define "cloudcore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: `cloudcore` for a release called cloudcore. */}}
{{- define "cloudcore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The namespace of every namespaced object: cloudcore keeps its Secrets (node CA, tokens,
certificate record) and ConfigMaps in the fixed namespace kedge-system.
*/}}
{{- define "cloudcore.namespace" -}}
kedge-system
{{- end }}

{{- define "cloudcore.serviceAccountName" -}}
{{- default (include "cloudcore.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "cloudcore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudcore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cloudcore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cloudcore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kedge
{{- end }}

{{- define "cloudcore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The hub certificate's SANs: hub.advertise plus (optionally) the Service's names. */}}
{{- define "cloudcore.advertise" -}}
{{- $names := list }}
{{- range .Values.hub.advertise }}
{{- $names = append $names (toString .) }}
{{- end }}
{{- if .Values.service.loadBalancerIP }}
{{- $names = append $names (toString .Values.service.loadBalancerIP) }}
{{- end }}
{{- if .Values.hub.advertiseServiceNames }}
{{- $svc := include "cloudcore.fullname" . }}
{{- $ns := include "cloudcore.namespace" . }}
{{- $names = append $names $svc }}
{{- $names = append $names (printf "%s.%s.svc" $svc $ns) }}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* Fails early on values cloudcore cannot honour. */}}
{{- define "cloudcore.validate" -}}
{{- if and .Values.nodeCA.existingSecret (ne .Values.nodeCA.existingSecret "kedge-node-ca") }}
{{- fail (printf "nodeCA.existingSecret is %q, but cloudcore reads the node CA from the fixed Secret kedge-system/kedge-node-ca: create (or copy) your CA under that name" .Values.nodeCA.existingSecret) }}
{{- end }}
{{- if lt (int .Values.replicas) 0 }}
{{- fail (printf "replicas must be 0 or more, not %v" .Values.replicas) }}
{{- end }}
{{- if not (has .Values.service.type (list "LoadBalancer" "NodePort")) }}
{{- fail (printf "service.type must be LoadBalancer or NodePort (edges connect from outside the cluster), not %q" .Values.service.type) }}
{{- end }}
{{- if and .Values.autonomy.webhook.enabled (not (has .Values.autonomy.webhook.certgen (list "certManager" "manual"))) }}
{{- fail "autonomy.webhook.certgen must be certManager or manual" }}
{{- end }}
{{- if and .Values.autonomy.webhook.enabled (eq .Values.autonomy.webhook.certgen "manual") (not .Values.autonomy.webhook.caBundle) }}
{{- fail "autonomy.webhook.certgen=manual needs autonomy.webhook.caBundle (base64 PEM of the CA that signed the Secret autonomy.webhook.tlsSecret)" }}
{{- end }}
{{- end }}
