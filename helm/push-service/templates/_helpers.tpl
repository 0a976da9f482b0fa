{{- define "push-service.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "push-service.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "push-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "push-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "push-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "push-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "push-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "push-service.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "push-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The secret-backed environment, shared by the pods and the migration job. */}}
{{/* Try-out mode: no existingSecret. One replica on SQLite with a persistent
     volume, and an admin token and master key the chart generates once. */}}
{{- define "push-service.tryOut" -}}
{{- if .Values.existingSecret -}}{{- else -}}true{{- end -}}
{{- end -}}

{{- define "push-service.generatedSecret" -}}
{{- printf "%s-generated" (include "push-service.fullname" .) -}}
{{- end -}}

{{/* The secret-backed environment, shared by the pods and the migration job. */}}
{{- define "push-service.secretEnv" -}}
{{- if include "push-service.tryOut" . -}}
- name: PUSH_MASTER_KEY
  valueFrom: {secretKeyRef: {name: {{ include "push-service.generatedSecret" . }}, key: master-key}}
- name: PUSH_ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "push-service.generatedSecret" . }}, key: admin-token}}
{{- else -}}
{{- $secret := .Values.existingSecret -}}
- name: PUSH_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.databaseUrl }}}}
- name: PUSH_REDIS_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.redisUrl }}}}
- name: PUSH_MASTER_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.masterKey }}}}
- name: PUSH_ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.adminToken }}}}
- name: PUSH_MASTER_KEY_PREVIOUS
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.masterKeyPrevious }}, optional: true}}
- name: PUSH_ADMIN_TOKEN_PREVIOUS
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secretKeys.adminTokenPrevious }}, optional: true}}
{{- end -}}
{{- end -}}
