{{/* The chart's name, cut to the 63 characters Kubernetes names allow. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name for every resource. */}}
{{- define "switchboard.fullname" -}}
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

{{/* Labels every resource carries. */}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role (edge, worker): pass (dict "root" $ "role" "edge"). */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* The Secret holding the JWT secret and the admin key. */}}
{{- define "switchboard.secretName" -}}
{{- default (include "switchboard.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* The image reference. */}}
{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
A Go duration such as 30s, 2m or 1h as whole seconds (the drain window, for the grace period
check).
*/}}
{{- define "switchboard.seconds" -}}
{{- $d := . | toString -}}
{{- if hasSuffix "ms" $d -}}{{ div (trimSuffix "ms" $d | int) 1000 }}
{{- else if hasSuffix "s" $d -}}{{ trimSuffix "s" $d | int }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else -}}{{ fail (printf "drainWindow: %q is not a duration such as 30s, 2m" $d) }}
{{- end -}}
{{- end }}

{{/*
What every Switchboard container gets: the role's command, the environment that carries
Redis, the credentials and the listen address (the config file holds the rest), the port,
the probes, the config mount.
*/}}
{{- define "switchboard.container" -}}
{{- $root := .root -}}
{{- $tls := and (eq .role "edge") $root.Values.tls.secretName -}}
- name: {{ .role }}
  image: {{ include "switchboard.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args: [{{ .role | quote }}]
  env:
    - name: SWITCHBOARD_LISTEN
      value: "0.0.0.0:8080"
    - name: SWITCHBOARD_LOG
      value: {{ $root.Values.logLevel | quote }}
    - name: SWITCHBOARD_LOG_FORMAT
      value: {{ $root.Values.logFormat | quote }}
    {{- with $root.Values.tracing.otlpEndpoint }}
    - name: SWITCHBOARD_OTLP_ENDPOINT
      value: {{ . | quote }}
    - name: SWITCHBOARD_TRACE_SAMPLE_RATIO
      value: {{ $root.Values.tracing.sampleRatio | quote }}
    {{- end }}
    - name: SWITCHBOARD_DRAIN_WINDOW
      value: {{ $root.Values.drainWindow | quote }}
    - name: SWITCHBOARD_REDIS_CLUSTER
      value: {{ $root.Values.redis.cluster | quote }}
    {{- $sentinel := $root.Values.redis.sentinel }}
    {{- if $sentinel.masterSet }}
    {{- if or $root.Values.redis.url $root.Values.redis.existingSecret $root.Values.redis.cluster }}
    {{- fail "redis.sentinel: give the sentinels or redis.url (and redis.cluster), not both" }}
    {{- end }}
    - name: SWITCHBOARD_REDIS_SENTINEL_MASTER
      value: {{ $sentinel.masterSet | quote }}
    - name: SWITCHBOARD_REDIS_SENTINELS
      value: {{ required "redis.sentinel.hosts is required with redis.sentinel.masterSet: the sentinels' host:port" ($sentinel.hosts | join ",") | quote }}
    {{- with $sentinel.existingSecret }}
    - name: SWITCHBOARD_REDIS_SENTINEL__PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $sentinel.existingSecretPasswordKey }}
    {{- end }}
    {{- else }}
    - name: SWITCHBOARD_REDIS_URL
      {{- if $root.Values.redis.existingSecret }}
      valueFrom:
        secretKeyRef:
          name: {{ $root.Values.redis.existingSecret }}
          key: {{ $root.Values.redis.existingSecretKey }}
      {{- else }}
      value: {{ required "redis.url is required: redis://host:6379, or a comma-separated seed list with redis.cluster=true (or redis.existingSecret, or redis.sentinel)" $root.Values.redis.url | quote }}
      {{- end }}
    {{- end }}
    - name: SWITCHBOARD_PERSISTENCE__REPLICAS_ACK
      value: {{ $root.Values.redis.replicasAck | quote }}
    - name: SWITCHBOARD_PERSISTENCE__ACK_TIMEOUT
      value: {{ $root.Values.redis.ackTimeout | quote }}
    - name: SWITCHBOARD_JWT_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ include "switchboard.secretName" $root }}
          key: jwt-secret
    - name: SWITCHBOARD_ADMIN_KEY
      valueFrom:
        secretKeyRef:
          name: {{ include "switchboard.secretName" $root }}
          key: admin-key
    - name: SWITCHBOARD_METRICS_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "switchboard.secretName" $root }}
          key: metrics-token
          optional: true
    {{- if $root.Values.config }}
    - name: SWITCHBOARD_CONFIG
      value: /etc/switchboard/config/switchboard.toml
    {{- end }}
    {{- if $tls }}
    - name: SWITCHBOARD_TLS_CERT
      value: /etc/switchboard/tls/tls.crt
    - name: SWITCHBOARD_TLS_KEY
      value: /etc/switchboard/tls/tls.key
    {{- end }}
  ports:
    - name: http
      containerPort: 8080
      protocol: TCP
  readinessProbe:
    httpGet: {path: /readyz, port: http{{ if $tls }}, scheme: HTTPS{{ end }}}
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    httpGet: {path: /healthz, port: http{{ if $tls }}, scheme: HTTPS{{ end }}}
    periodSeconds: 10
    failureThreshold: 6
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  {{- if or $root.Values.config $tls }}
  volumeMounts:
    {{- if $root.Values.config }}
    - name: config
      mountPath: /etc/switchboard/config
      readOnly: true
    {{- end }}
    {{- if $tls }}
    # Not a subPath: the kubelet then swaps in a renewed Secret, and the node reloads it.
    - name: tls
      mountPath: /etc/switchboard/tls
      readOnly: true
    {{- end }}
  {{- end }}
{{- end }}

{{/* Pod-level settings both roles share. */}}
{{- define "switchboard.podSpec" -}}
{{- $root := .root -}}
{{- $tls := and (eq .role "edge") $root.Values.tls.secretName -}}
# Kubernetes would inject SWITCHBOARD_SERVICE_HOST and the like for a Service named
# `switchboard`: the node ignores them, and this keeps them out altogether.
enableServiceLinks: false
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or $root.Values.config $tls }}
volumes:
  {{- if $root.Values.config }}
  - name: config
    configMap:
      name: {{ include "switchboard.fullname" $root }}
  {{- end }}
  {{- if $tls }}
  - name: tls
    secret:
      secretName: {{ $tls }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations: the config's checksum rolls the pods when it changes. */}}
{{- define "switchboard.podAnnotations" -}}
checksum/config: {{ printf "%s|%s|%s|%s|%v" .Values.config .Values.logLevel .Values.logFormat .Values.drainWindow .Values.redis | sha256sum }}
{{- end }}
