{{/* LiteLLM's config.yaml, from values. Provider keys appear only as os.environ/NAME. */}}
{{- define "swarmd.litellmConfig" -}}
{{- $l := .Values.litellm -}}
model_list:
  {{- toYaml $l.modelList | nindent 2 }}
router_settings:
  {{- toYaml $l.routerSettings | nindent 2 }}
{{- with $l.guardrails }}
guardrails:
  {{- toYaml . | nindent 2 }}
{{- end }}
litellm_settings:
  {{- toYaml $l.litellmSettings | nindent 2 }}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
{{- end }}
