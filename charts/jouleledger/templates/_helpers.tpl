{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "jouleledger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full object name prefix. */}}
{{- define "jouleledger.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "jouleledger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries; pass (dict "ctx" $ "component" "agent"). */}}
{{- define "jouleledger.labels" -}}
helm.sh/chart: {{ include "jouleledger.chart" .ctx }}
{{ include "jouleledger.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: jouleledger
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "jouleledger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jouleledger.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jouleledger.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "jouleledger.agent.serviceAccountName" -}}
{{- default (printf "%s-agent" (include "jouleledger.fullname" .)) .Values.agent.serviceAccount.name }}
{{- end }}

{{- define "jouleledger.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "jouleledger.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{/* Arguments of `jouleledger agent` (the command line agreed with the agent). */}}
{{- define "jouleledger.agent.args" -}}
- agent
- --backend
- {{ .Values.agent.backend }}
- --node-name
- $(NODE_NAME)
- --interval-s
- {{ .Values.agent.intervalSeconds | quote }}
- --listen-address
- 0.0.0.0
- --port
- {{ .Values.agent.port | quote }}
- --kubelet-socket
- {{ printf "unix://%s/kubelet.sock" (trimSuffix "/" .Values.agent.podResourcesPath) }}
- --proc-root
- /host/proc
- --checkpoint-path
- /var/lib/jouleledger/agent-checkpoint.json
- --retention-s
- {{ .Values.agent.retentionSeconds | quote }}
{{- if .Values.agent.labelAllowlist }}
- --label-allowlist
- {{ join "," .Values.agent.labelAllowlist | quote }}
{{- end }}
- --pod-metadata
- {{ .Values.agent.podMetadata }}
{{- include "jouleledger.webConfigArgs" . }}
{{- end }}

{{/* Arguments of `jouleledger operator` (the command line agreed with the operator). */}}
{{- define "jouleledger.operator.args" -}}
- operator
- --config
- /etc/jouleledger/config.yaml
- --listen-address
- 0.0.0.0
- --port
- {{ .Values.operator.port | quote }}
- --agent-namespace
- $(POD_NAMESPACE)
- --agent-selector
- app.kubernetes.io/component=agent,app.kubernetes.io/instance={{ .Release.Name }}
- --agent-port
- {{ .Values.agent.port | quote }}
- --scrape-interval-s
- {{ .Values.operator.scrapeIntervalSeconds | quote }}
- --completion-poll-s
- {{ .Values.operator.completionPollSeconds | quote }}
{{- if .Values.operator.peering.enabled }}
- --peering
- {{ .Values.operator.peering.name }}
{{- else }}
- --standalone
{{- end }}
{{- if .Values.operator.dryRun }}
- --dry-run
{{- end }}
{{- if gt (int .Values.operator.shards) 1 }}
- --shard-from-pod-name
- --total-shards
- {{ .Values.operator.shards | quote }}
{{- end }}
{{- include "jouleledger.webConfigArgs" . }}
{{- include "jouleledger.operator.scrapeArgs" . }}
{{- end }}

{{/* Where the metricsSecurity Secret is mounted. */}}
{{- define "jouleledger.webDir" -}}
/etc/jouleledger/web
{{- end }}

{{/* --web-config-file of both components, when metricsSecurity is enabled. */}}
{{- define "jouleledger.webConfigArgs" -}}
{{- if .Values.metricsSecurity.enabled }}
- --web-config-file
- {{ include "jouleledger.webDir" . }}/{{ .Values.metricsSecurity.webConfigKey }}
{{- end }}
{{- end }}

{{/* How the operator authenticates to the agents (metricsSecurity.scrape). */}}
{{- define "jouleledger.operator.scrapeArgs" -}}
{{- $sec := .Values.metricsSecurity }}
{{- $dir := include "jouleledger.webDir" . }}
{{- if $sec.enabled }}
{{- if $sec.tls }}
- --agent-scheme
- https
{{- with $sec.scrape.caFile }}
- --agent-ca-file
- {{ $dir }}/{{ . }}
{{- end }}
- --agent-server-name
- {{ default (printf "%s-agent.%s.svc" (include "jouleledger.fullname" .) .Release.Namespace) $sec.scrape.serverName }}
{{- if and $sec.scrape.certFile $sec.scrape.keyFile }}
- --agent-cert-file
- {{ $dir }}/{{ $sec.scrape.certFile }}
- --agent-key-file
- {{ $dir }}/{{ $sec.scrape.keyFile }}
{{- end }}
{{- end }}
{{- if and $sec.scrape.username $sec.scrape.passwordFile }}
- --agent-basic-auth-username
- {{ $sec.scrape.username | quote }}
- --agent-basic-auth-password-file
- {{ $dir }}/{{ $sec.scrape.passwordFile }}
{{- else if $sec.scrape.bearerTokenFile }}
- --agent-bearer-token-file
- {{ $dir }}/{{ $sec.scrape.bearerTokenFile }}
{{- end }}
{{- end }}
{{- end }}

{{/* Liveness/readiness handler of /healthz: HTTPS with TLS, a TCP check where client certificates are required. */}}
{{- define "jouleledger.probeHandler" -}}
{{- $sec := .Values.metricsSecurity }}
{{- if and $sec.enabled $sec.requireClientCertificates }}
tcpSocket:
  port: metrics
{{- else }}
httpGet:
  path: /healthz
  port: metrics
  {{- if and $sec.enabled $sec.tls }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}

{{/* The web Secret's volume and mount (metricsSecurity). */}}
{{- define "jouleledger.webVolume" -}}
{{- if .Values.metricsSecurity.enabled }}
# Mounted by the kubelet: no ServiceAccount of the chart can read Secrets.
- name: web
  secret:
    secretName: {{ required "metricsSecurity.secretName is required when metricsSecurity.enabled" .Values.metricsSecurity.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "jouleledger.webVolumeMount" -}}
{{- if .Values.metricsSecurity.enabled }}
- name: web
  mountPath: {{ include "jouleledger.webDir" . }}
  readOnly: true
{{- end }}
{{- end }}
