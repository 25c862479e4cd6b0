{{/*
The app's activity timeout in seconds. It is fixed in the app (an LLM
activity is abandoned after 120 s); LiteLLM's per-call timeout and the Dapr
resiliency timeout for LLM calls must stay below it.
*/}}
{{- define "swarmd.activityTimeoutSeconds" -}}120{{- end }}

{{- define "swarmd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "swarmd.fullname" -}}
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

{{/* Name of a component's objects: <fullname>-<component>, at most 63 chars. */}}
{{- define "swarmd.componentName" -}}
{{- printf "%s-%s" (include "swarmd.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "swarmd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "swarmd.labels" -}}
helm.sh/chart: {{ include "swarmd.chart" . }}
app.kubernetes.io/name: {{ include "swarmd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: swarmd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component: pass (dict "root" $ "component" "app"). */}}
{{- define "swarmd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swarmd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of every pod of the release (used by the default-deny policy). */}}
{{- define "swarmd.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "swarmd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "swarmd.appName" -}}
{{- include "swarmd.fullname" . }}
{{- end }}

{{- define "swarmd.litellmName" -}}
{{- include "swarmd.componentName" (dict "root" . "component" "litellm") }}
{{- end }}

{{- define "swarmd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swarmd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: pass (dict "image" .Values.x.image "root" $). Digest wins over tag. */}}
{{- define "swarmd.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Secret holding the app token and the LiteLLM master key. */}}
{{- define "swarmd.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "swarmd.componentName" (dict "root" . "component" "generated") }}
{{- end }}
{{- end }}

{{/* Secret holding LITELLM_MASTER_KEY and the provider keys. */}}
{{- define "swarmd.litellmSecretName" -}}
{{- default (include "swarmd.secretName" .) .Values.litellm.existingSecret }}
{{- end }}

{{- define "swarmd.litellmServiceHost" -}}
{{- printf "%s.%s.svc" (include "swarmd.litellmName" .) .Release.Namespace }}
{{- end }}

{{/* Base URL (without /v1) of the LLM gateway the app calls. */}}
{{- define "swarmd.llmGatewayUrl" -}}
{{- if .Values.litellm.enabled }}
{{- printf "http://%s:%d" (include "swarmd.litellmServiceHost" .) (int .Values.litellm.port) }}
{{- else }}
{{- .Values.litellm.externalUrl | trimSuffix "/" }}
{{- end }}
{{- end }}

{{/* Name of the Dapr HTTPEndpoint for LiteLLM (also the resiliency target). */}}
{{- define "swarmd.llmEndpointName" -}}
{{- include "swarmd.litellmName" . }}
{{- end }}

{{/* SWARMD_LLM_BASE_URL: the gateway + /v1, or the same through the sidecar. */}}
{{- define "swarmd.llmBaseUrl" -}}
{{- if .Values.app.llmViaDapr }}
{{- printf "http://localhost:3500/v1.0/invoke/%s/method/v1" (include "swarmd.llmEndpointName" .) }}
{{- else }}
{{- printf "%s/v1" (include "swarmd.llmGatewayUrl" .) }}
{{- end }}
{{- end }}

{{- define "swarmd.daprConfigName" -}}
{{- if .Values.dapr.configuration.create }}
{{- include "swarmd.fullname" . }}
{{- else }}
{{- .Values.dapr.configuration.existingName }}
{{- end }}
{{- end }}

{{- define "swarmd.stateStorePorts" -}}
{{- $ports := .Values.dapr.stateStore.ports }}
{{- if not $ports }}
{{- if eq .Values.dapr.stateStore.type "postgresql" }}
{{- $ports = list 5432 }}
{{- else }}
{{- $ports = list 6379 }}
{{- end }}
{{- if and .Values.dapr.lockStore.enabled (eq .Values.dapr.stateStore.type "postgresql") }}
{{- $ports = append $ports 6379 }}
{{- end }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/* The pod template's security context shared by the app and the watchdog. */}}
{{- define "swarmd.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.app.runAsUser }}
runAsGroup: {{ .Values.app.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Egress rule allowing DNS to the cluster DNS pods. */}}
{{- define "swarmd.dnsEgress" -}}
# DNS.
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
"true" when the watchdog runs as a native sidecar: asked for, and the
cluster has native sidecars on by default (Kubernetes >= 1.29; 1.28 had them
behind a feature gate). Otherwise it runs as a plain second container.
*/}}
{{- define "swarmd.watchdogNative" -}}
{{- if and .Values.watchdog.nativeSidecar (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version) -}}
true
{{- end -}}
{{- end }}
