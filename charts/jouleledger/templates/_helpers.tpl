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
{{- if .Values.operator.peering.enabled }}
- --peering
- {{ .Values.operator.peering.name }}
{{- else }}
- --standalone
{{- end }}
{{- if .Values.operator.dryRun }}
- --dry-run
{{- end }}
{{- end }}
