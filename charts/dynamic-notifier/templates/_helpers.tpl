{{/* The chart name. */}}
{{- define "dynamic-notifier.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already says dynamic-notifier. */}}
{{- define "dynamic-notifier.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "dynamic-notifier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamic-notifier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end }}

{{- define "dynamic-notifier.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dynamic-notifier.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dynamic-notifier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dynamic-notifier.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dynamic-notifier.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "dynamic-notifier.subject" }}
- kind: ServiceAccount
  name: {{ include "dynamic-notifier.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Rules (apiGroups, resources) with the watch verbs added. */}}
{{- define "dynamic-notifier.watchRules" -}}
{{- range . }}
- apiGroups: {{ required "every watch rule needs apiGroups" .apiGroups | toJson }}
  resources: {{ required "every watch rule needs resources" .resources | toJson }}
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
