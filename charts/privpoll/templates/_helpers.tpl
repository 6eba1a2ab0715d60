{{/* Names, labels and the few values several templates compute. */}}

{{- define "privpoll.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix of every object name; 40 characters leave room for suffixes. */}}
{{- define "privpoll.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "privpoll.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "privpoll.selectorLabels" -}}
app.kubernetes.io/name: {{ include "privpoll.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "privpoll.labels" -}}
helm.sh/chart: {{ include "privpoll.chart" . }}
{{ include "privpoll.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: privpoll
{{- end }}

{{- define "privpoll.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "privpoll.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "privpoll.fullname" .) }}
{{- end }}

{{- define "privpoll.authSecret" -}}
{{- .Values.auth.existingSecret | default (include "privpoll.fullname" .) }}
{{- end }}

{{/* The Secret holding the SMTP URL (mail.smtpUrl), or the user's own. */}}
{{- define "privpoll.mailSecret" -}}
{{- .Values.mail.existingSecret | default (printf "%s-mail" (include "privpoll.fullname" .)) }}
{{- end }}

{{/* The namespaces whose Polls the operator serves: the release's first. */}}
{{- define "privpoll.watchNamespaces" -}}
{{- $all := list .Release.Namespace }}
{{- range .Values.operator.extraNamespaces }}
{{- $all = append $all . }}
{{- end }}
{{- $all | uniq | toJson }}
{{- end }}

{{- define "privpoll.natsHost" -}}
{{- printf "%s-nats.%s.svc" (include "privpoll.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Fully qualified: the sinks may run in another namespace than NATS. */}}
{{- define "privpoll.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s:4222" (include "privpoll.natsHost" .) }}
{{- else }}
{{- required "nats.external.url is required when nats.enabled is false: give the nats:// URL of a NATS server with JetStream" .Values.nats.external.url }}
{{- end }}
{{- end }}

{{- define "privpoll.streamReplicas" -}}
{{- if .Values.nats.enabled }}{{ .Values.nats.replicas }}{{ else }}1{{ end }}
{{- end }}

{{- define "privpoll.cockroachdb" -}}
{{- printf "%s-cockroachdb" (include "privpoll.fullname" .) }}
{{- end }}

{{- define "privpoll.cockroachdbTls" -}}
{{- if and .Values.cockroachdb.enabled (or .Values.cockroachdb.tls.enabled (gt (int .Values.cockroachdb.nodes) 1)) }}true{{ end }}
{{- end }}

{{/* The Secret and key holding the DSN every component uses. */}}
{{- define "privpoll.databaseSecret" -}}
{{- if .Values.cockroachdb.enabled }}
{{- printf "%s-database" (include "privpoll.fullname" .) }}
{{- else }}
{{- required "database.external.existingSecret is required when cockroachdb.enabled is false: name the Secret holding the DSN" .Values.database.external.existingSecret }}
{{- end }}
{{- end }}

{{- define "privpoll.databaseKey" -}}
{{- if .Values.cockroachdb.enabled }}url{{ else }}{{ .Values.database.external.key }}{{ end }}
{{- end }}

{{/* The public CA certificate of the in-chart CockroachDB (TLS only). */}}
{{- define "privpoll.databaseCaSecret" -}}
{{- printf "%s-database-ca" (include "privpoll.fullname" .) }}
{{- end }}

{{- define "privpoll.databaseCaDir" -}}/etc/privpoll/database-ca{{- end }}

{{- define "privpoll.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.ingest.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingest.ingress.tls.enabled) .Values.ingest.ingress.host }}
{{- else }}
{{- /* What `kubectl port-forward ... 8000:80` (NOTES.txt) makes of it. */}}
{{- print "http://127.0.0.1:8000" }}
{{- end }}
{{- end }}

{{/* Environment shared by the ingest and the operator. */}}
{{- define "privpoll.commonEnv" -}}
- name: PRIVPOLL_NATS_URL
  value: {{ include "privpoll.natsUrl" . | quote }}
- name: PRIVPOLL_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "privpoll.databaseSecret" . }}
      key: {{ include "privpoll.databaseKey" . }}
- name: PRIVPOLL_STREAM_REPLICAS
  value: {{ include "privpoll.streamReplicas" . | quote }}
- name: PRIVPOLL_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{- define "privpoll.databaseCaVolume" -}}
{{- if include "privpoll.cockroachdbTls" . }}
- name: database-ca
  secret:
    secretName: {{ include "privpoll.databaseCaSecret" . }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- end }}

{{- define "privpoll.databaseCaMount" -}}
{{- if include "privpoll.cockroachdbTls" . }}
- name: database-ca
  mountPath: {{ include "privpoll.databaseCaDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "privpoll.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
