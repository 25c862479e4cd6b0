{{/*
Checks of value combinations the schema cannot express. Each message says
which values conflict and what to change. Returns a JSON list of messages.
*/}}
{{- define "swarmd.validationErrors" -}}
{{- $v := .Values -}}
{{- $errors := list -}}
{{- if ge (int $v.dapr.gracefulShutdownSeconds) (int $v.app.terminationGracePeriodSeconds) }}
{{- $errors = append $errors (printf "dapr.gracefulShutdownSeconds (%d) must be below app.terminationGracePeriodSeconds (%d): otherwise Kubernetes kills the Dapr sidecar before it has drained in-flight workflow work. Lower dapr.gracefulShutdownSeconds or raise app.terminationGracePeriodSeconds." (int $v.dapr.gracefulShutdownSeconds) (int $v.app.terminationGracePeriodSeconds)) }}
{{- end }}
{{- $daprLive := $v.dapr.sidecar.livenessProbe }}
{{- $daprDown := mul (int $daprLive.periodSeconds) (int $daprLive.failureThreshold) }}
{{- if le (float64 $v.supervisor.workerLostAfterSeconds) (float64 $daprDown) }}
{{- $errors = append $errors (printf "supervisor.workerLostAfterSeconds (%v) must exceed the time kubelet gives a failing daprd before restarting it (dapr.sidecar.livenessProbe periodSeconds x failureThreshold = %d s): otherwise the app is restarted for its sidecar's fault. Raise supervisor.workerLostAfterSeconds or lower the daprd probe's period or threshold." $v.supervisor.workerLostAfterSeconds $daprDown) }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled }}
{{- $errors = append $errors "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true: KEDA creates its own HPA for the app, and two autoscalers would fight over its replicas. Enable only one of them." }}
{{- end }}
{{- if and $v.autoscaling.hpa.enabled (gt (int $v.autoscaling.hpa.minReplicas) (int $v.autoscaling.hpa.maxReplicas)) }}
{{- $errors = append $errors (printf "autoscaling.hpa.minReplicas (%d) is greater than autoscaling.hpa.maxReplicas (%d)." (int $v.autoscaling.hpa.minReplicas) (int $v.autoscaling.hpa.maxReplicas)) }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (gt (int $v.autoscaling.keda.minReplicaCount) (int $v.autoscaling.keda.maxReplicaCount)) }}
{{- $errors = append $errors (printf "autoscaling.keda.minReplicaCount (%d) is greater than autoscaling.keda.maxReplicaCount (%d)." (int $v.autoscaling.keda.minReplicaCount) (int $v.autoscaling.keda.maxReplicaCount)) }}
{{- end }}
{{- if and (eq $v.dapr.stateStore.type "postgresql") (not $v.dapr.stateStore.postgresql.connectionSecret.name) }}
{{- $errors = append $errors "dapr.stateStore.type is postgresql but dapr.stateStore.postgresql.connectionSecret.name is empty: create a Secret with the PostgreSQL connection string and set dapr.stateStore.postgresql.connectionSecret.name (and .key) to it." }}
{{- end }}
{{- if $v.pubsub.enabled }}
{{- if not $v.dapr.appTokenSecret }}
{{- $errors = append $errors "pubsub.enabled is true but dapr.appTokenSecret is empty: the sidecar calls the app's pub/sub routes, which anyone reaching the Service could call too. Create a Secret with key `token` and set dapr.appTokenSecret to it." }}
{{- end }}
{{- if and (eq $v.pubsub.type "kafka") (not $v.pubsub.kafka.brokers) }}
{{- $errors = append $errors "pubsub.type is kafka but pubsub.kafka.brokers is empty: set it to the Kafka brokers (host:port, comma-separated)." }}
{{- end }}
{{- if and (eq $v.pubsub.type "kafka") (eq $v.pubsub.kafka.authType "password") (not $v.pubsub.kafka.saslSecret.name) }}
{{- $errors = append $errors "pubsub.kafka.authType is password but pubsub.kafka.saslSecret.name is empty: name the Secret holding the SASL user name and password." }}
{{- end }}
{{- if and (eq $v.pubsub.type "jetstream") (not $v.pubsub.jetstream.natsURL) }}
{{- $errors = append $errors "pubsub.type is jetstream but pubsub.jetstream.natsURL is empty: set it to the NATS server (nats://host:4222)." }}
{{- end }}
{{- if and (eq $v.pubsub.type "jetstream") $v.autoscaling.keda.enabled (not $v.pubsub.jetstream.monitoringEndpoint) }}
{{- $errors = append $errors "autoscaling.keda.enabled with pubsub.type jetstream needs pubsub.jetstream.monitoringEndpoint (the NATS monitoring host:8222) for KEDA's nats-jetstream lag trigger." }}
{{- end }}
{{- end }}
{{- if and (not $v.dapr.configuration.create) (not $v.dapr.configuration.existingName) }}
{{- $errors = append $errors "dapr.configuration.create is false but dapr.configuration.existingName is empty: name the Dapr Configuration the sidecar should use, or let the chart create one." }}
{{- end }}
{{- if and (not $v.litellm.enabled) (not $v.litellm.externalUrl) }}
{{- $errors = append $errors "litellm.enabled is false but litellm.externalUrl is empty: the app needs an OpenAI-compatible gateway. Enable litellm or set litellm.externalUrl." }}
{{- end }}
{{- if $v.litellm.enabled }}
{{- $limit := int (include "swarmd.activityTimeoutSeconds" .) }}
{{- $timeout := $v.litellm.routerSettings.timeout | default 0 | float64 }}
{{- if ge $timeout (float64 $limit) }}
{{- $errors = append $errors (printf "litellm.routerSettings.timeout (%v s) must be below the app's activity timeout (%d s): otherwise the workflow abandons the activity while LiteLLM is still waiting. Lower litellm.routerSettings.timeout." $v.litellm.routerSettings.timeout $limit) }}
{{- end }}
{{- $aliases := list }}
{{- range $v.litellm.modelList }}
{{- $aliases = append $aliases .model_name }}
{{- range $param, $value := .litellm_params }}
{{- if kindIs "string" $value }}
{{- range $ref := regexFindAll "os\\.environ/[A-Za-z0-9_]+" $value -1 }}
{{- $name := trimPrefix "os.environ/" $ref }}
{{- if not (hasKey $v.litellm.providerKeys $name) }}
{{- $errors = append $errors (printf "litellm.modelList references %s, but %s is not in litellm.providerKeys: add `%s: <key in the LiteLLM Secret>` to litellm.providerKeys." $ref $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $v.litellm.routerSettings.fallbacks }}
{{- range $from, $tos := . }}
{{- range (prepend $tos $from) }}
{{- if not (has . $aliases) }}
{{- $errors = append $errors (printf "litellm.routerSettings.fallbacks names %q, which is no model_name in litellm.modelList." .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.slack.enabled (not $v.slack.existingSecret) }}
{{- $errors = append $errors "slack.enabled is true but slack.existingSecret is empty: create a Secret with the Slack app's signing secret and bot token (keys slack.secretKeys.signingSecret and slack.secretKeys.botToken) and name it in slack.existingSecret." }}
{{- end }}
{{- with $v.identity.oidc }}
{{- if and (or .issuer .audience .jwksUrl) (not (and .issuer .audience .jwksUrl)) }}
{{- $errors = append $errors "identity.oidc: issuer, audience and jwksUrl go together: set all three to accept OIDC JWTs, or none." }}
{{- end }}
{{- end }}
{{- toJson $errors }}
{{- end }}
