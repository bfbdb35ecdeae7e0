{{/* cloudcore.toml (see `cloudcore config print-default`); `cloudcore run --check` validates it. */}}
{{- define "cloudcore.config" -}}
{{- $validity := int64 .Values.hub.nodeCertValiditySeconds }}
{{- if or (lt $validity 10) (gt $validity 315360000) }}
{{- fail (printf "hub.nodeCertValiditySeconds must be between 10 and 315360000 (10 years), got %d" $validity) }}
{{- end -}}
# Rendered by the cloudcore Helm chart from its values.
[hub]
listen = "0.0.0.0:{{ int .Values.hub.port }}"
# Names/IPs edges dial: the SANs of the hub's serving certificate.
advertise = {{ include "cloudcore.advertise" . }}
max_frame_bytes = {{ int64 .Values.hub.maxFrameBytes }}
ping_seconds = {{ int64 .Values.hub.pingSeconds }}
idle_seconds = {{ int64 .Values.hub.idleSeconds }}
node_cert_validity_seconds = {{ $validity }}
cluster_cidr = {{ .Values.hub.clusterCIDR | quote }}
node_cidr_mask_size = {{ int .Values.hub.nodeCIDRMaskSize }}
queued_request_budget_mib = {{ int .Values.hub.queuedRequestBudgetMiB }}

[metrics]
listen = "0.0.0.0:{{ int .Values.metrics.port }}"

[lifecycle]
grace_seconds = {{ int64 .Values.lifecycle.graceSeconds }}
eviction = {{ .Values.lifecycle.eviction }}

[autonomy]
enabled = {{ .Values.autonomy.enabled }}
edge_label = {{ .Values.autonomy.edgeLabel | quote }}
{{- if .Values.autonomy.webhook.enabled }}
webhook_listen = "0.0.0.0:{{ int .Values.autonomy.webhook.port }}"
webhook_cert = "/var/run/kedge/webhook/tls.crt"
webhook_key = "/var/run/kedge/webhook/tls.key"
{{- end }}
{{- end }}
