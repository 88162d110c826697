{{/* Full name of the release's objects. */}}
{{- define "pushgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pushgate.selectorLabels" -}}
app.kubernetes.io/name: pushgate-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pushgate.labels" -}}
{{ include "pushgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pushgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pushgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pushgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
