{{/* cloudcore.toml (see `cloudcore config print-default`); `cloudcore run --check` validates it. */}}
{{- define "cloudcore.config" -}}
# Rendered by the cloudcore Helm chart from its values.
[hub]
listen = "0.0.0.0:{{ int .Values.hub.port }}"
# Names/IPs edges dial: the SANs of the hub's serving certificate.
advertise = {{ include "cloudcore.advertise" . }}
max_frame_bytes = {{ int64 .Values.hub.maxFrameBytes }}
ping_seconds = {{ int64 .Values.hub.pingSeconds }}
idle_seconds = {{ int64 .Values.hub.idleSeconds }}

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
