{{/*
The watchdog container. As a native sidecar (an initContainer with
restartPolicy: Always) it starts before the app and stops after it; as a
plain container it runs alongside. Either way it shares the pod's process
namespace and finds the app's pid by SWARMD_WATCHDOG_APP_CMDLINE.
*/}}
{{- define "swarmd.watchdogContainer" -}}
{{- $wd := .Values.watchdog -}}
- name: watchdog
  image: {{ include "swarmd.image" (dict "image" $wd.image "root" .) }}
  imagePullPolicy: {{ $wd.image.pullPolicy }}
  {{- if include "swarmd.watchdogNative" . }}
  restartPolicy: Always
  {{- end }}
  command: ["swarmd-watchdog"]
  ports:
    - name: watchdog
      containerPort: {{ $wd.port }}
      protocol: TCP
  env:
    - name: SWARMD_WATCHDOG_APP_CMDLINE
      value: {{ $wd.appCmdline | quote }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: DAPR_HTTP_PORT
      value: "3500"
    - name: DAPR_GRPC_PORT
      value: "50001"
    - name: SWARMD_WATCHDOG_PORT
      value: {{ $wd.port | quote }}
    # The watchdog reads the owner registry from the app's state store.
    - name: SWARMD_STATE_STORE
      value: {{ .Values.dapr.stateStore.name | quote }}
    {{- with .Values.dapr.apiTokenSecret }}
    - name: DAPR_API_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: token
    {{- end }}
    {{- with $wd.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: watchdog
    periodSeconds: 1
    failureThreshold: 30
  livenessProbe:
    httpGet:
      path: /healthz
      port: watchdog
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  resources:
    {{- toYaml $wd.resources | nindent 4 }}
  securityContext:
    {{- include "swarmd.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: watchdog-tmp
      mountPath: /tmp
{{- end }}
