{{/* nats-server's configuration: JetStream on a volume, a cluster of 3 when asked. */}}
{{- define "privpoll.natsConf" -}}
{{- $nats := printf "%s-nats" (include "privpoll.fullname" .) }}
{{- $replicas := int .Values.nats.replicas }}
port: 4222
http_port: 8222
server_name: $SERVER_NAME
lame_duck_duration: 30s
jetstream {
  store_dir: /data
  max_memory_store: {{ .Values.nats.jetstream.maxMemory }}
  max_file_store: {{ .Values.nats.jetstream.maxFile }}
}
{{- if gt $replicas 1 }}
cluster {
  name: {{ $nats }}
  port: 6222
  routes: [
    {{- range $i := until $replicas }}
    nats://{{ $nats }}-{{ $i }}.{{ $nats }}-headless.{{ $.Release.Namespace }}.svc:6222
    {{- end }}
  ]
  connect_retries: 120
}
{{- end }}
{{- end }}
