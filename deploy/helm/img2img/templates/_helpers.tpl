{{/* Names: <release>-img2img, cut to Kubernetes' 63 characters. */}}
{{- define "img2img.fullname" -}}
{{- if contains "img2img" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-img2img" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A model's name as a DNS label: model names may hold . and _ (common/models.ts). */}}
{{- define "img2img.modelSlug" -}}
{{- regexReplaceAll "[._]" . "-" | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "img2img.consumerName" -}}
{{- printf "%s-consumer-%s" (include "img2img.fullname" .root) (include "img2img.modelSlug" .model.name) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The selector labels. A Deployment's selector is immutable: changing nameOverride on an
upgrade is refused by the API server; uninstall and install again instead. */}}
{{- define "img2img.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "img2img.labels" -}}
{{ include "img2img.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "img2img.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The variables every process shares (common/config.ts), from the ConfigMap and Secrets. */}}
{{- define "img2img.sharedEnv" -}}
- name: KAFKA_BROKERS
  value: {{ join "," .Values.kafka.brokers | quote }}
- name: TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: TOPIC_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: S3_ENDPOINT
  value: {{ .Values.storage.endpoint | quote }}
- name: S3_REGION
  value: {{ .Values.storage.region | quote }}
- name: S3_BUCKET
  value: {{ .Values.storage.bucket | quote }}
- name: S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.storage.secret.name }}
      key: {{ .Values.storage.secret.accessKeyKey }}
- name: S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.storage.secret.name }}
      key: {{ .Values.storage.secret.secretKeyKey }}
- name: MODEL_NAMES_FILE
  value: /etc/img2img/model_names.txt
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "img2img.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Containers run as the image's `node` user, with nothing they do not need. */}}
{{- define "img2img.podSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "img2img.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* lagThreshold of a model: its measured images/s per GPU x GPUs per pod x drainSeconds (at least 1). */}}
{{- define "img2img.lagThreshold" -}}
{{- if .model.lagThreshold -}}
{{- .model.lagThreshold | int -}}
{{- else -}}
{{- $gpus := max 1 (int .root.Values.consumer.gpusPerPod) -}}
{{- max 1 (mulf (float64 .model.imagesPerSecondPerGpu) (float64 $gpus) (float64 .root.Values.keda.drainSeconds) | floor | int) -}}
{{- end -}}
{{- end -}}
