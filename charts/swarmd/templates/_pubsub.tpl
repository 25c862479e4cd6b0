{{/*
KEDA's lag trigger for the pub/sub broker: the swarm.tasks messages the app's
consumer group has not processed yet (redis-streams, kafka or nats-jetstream).
*/}}
{{- define "swarmd.lagTrigger" -}}
{{- $p := .Values.pubsub -}}
{{- $d := .Values.dapr -}}
{{- if eq $p.type "kafka" -}}
# Scale on the consumer group's lag on swarm.tasks.
- type: kafka
  name: swarm-tasks-lag
  metadata:
    bootstrapServers: {{ $p.kafka.brokers | quote }}
    consumerGroup: {{ $d.appId | quote }}
    topic: swarm.tasks
    lagThreshold: {{ $p.keda.lagThreshold | quote }}
    activationLagThreshold: {{ $p.keda.activationLagThreshold | quote }}
    offsetResetPolicy: {{ ternary "earliest" "latest" (eq $p.kafka.initialOffset "oldest") | quote }}
    {{- if eq $p.kafka.authType "password" }}
    sasl: plaintext
    {{- end }}
  {{- if eq $p.kafka.authType "password" }}
  authenticationRef:
    name: {{ include "swarmd.appName" . }}-broker
  {{- end }}
{{- else if eq $p.type "jetstream" -}}
# Scale on the durable consumer's pending messages.
- type: nats-jetstream
  name: swarm-tasks-lag
  metadata:
    natsServerMonitoringEndpoint: {{ $p.jetstream.monitoringEndpoint | quote }}
    account: {{ $p.jetstream.account | quote }}
    stream: {{ $p.jetstream.streamName | quote }}
    consumer: {{ $p.jetstream.durableName | quote }}
    lagThreshold: {{ $p.keda.lagThreshold | quote }}
    activationLagThreshold: {{ $p.keda.activationLagThreshold | quote }}
{{- else -}}
{{- $ss := $d.stateStore -}}
# Scale on the consumer group's lag on the swarm.tasks stream (Redis 7+).
- type: redis-streams
  name: swarm-tasks-lag
  metadata:
    address: {{ default $ss.redis.host $p.redis.host | quote }}
    stream: swarm.tasks
    consumerGroup: {{ $d.appId | quote }}
    lagCount: {{ $p.keda.lagThreshold | quote }}
    activationLagCount: {{ $p.keda.activationLagThreshold | quote }}
    enableTLS: {{ $p.redis.enableTLS | quote }}
  {{- if include "swarmd.lagTriggerSecret" . }}
  authenticationRef:
    name: {{ include "swarmd.appName" . }}-broker
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
secretTargetRef entries of the broker's TriggerAuthentication; empty when the
broker needs no credentials.
*/}}
{{- define "swarmd.lagTriggerSecret" -}}
{{- $p := .Values.pubsub -}}
{{- if and (eq $p.type "kafka") (eq $p.kafka.authType "password") -}}
- parameter: username
  name: {{ $p.kafka.saslSecret.name }}
  key: {{ $p.kafka.saslSecret.usernameKey }}
- parameter: password
  name: {{ $p.kafka.saslSecret.name }}
  key: {{ $p.kafka.saslSecret.passwordKey }}
{{- else if eq $p.type "redis" -}}
{{- $pw := $p.redis.passwordSecret -}}
{{- if not $pw.name }}{{ $pw = .Values.dapr.stateStore.redis.passwordSecret }}{{ end -}}
{{- if $pw.name -}}
- parameter: password
  name: {{ $pw.name }}
  key: {{ $pw.key }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Egress ports of the pub/sub broker (NetworkPolicy), as a JSON list. */}}
{{- define "swarmd.pubsubPorts" -}}
{{- $p := .Values.pubsub -}}
{{- $ports := $p.ports -}}
{{- if not $ports -}}
{{- $ports = list (get (dict "redis" 6379 "kafka" 9092 "jetstream" 4222) $p.type) -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}
