{{/*
Shared pieces of every dlaunch object and pod. They mirror launcher/targets/kubernetes/pods.py;
tests/test_helm.py renders both and compares the objects.
*/}}

{{/* Labels on every object and pod: the user's, then dlaunch's own (which win). */}}
{{- define "dlaunch.labels" -}}
{{- $own := dict "dlaunch.dev/job" .Values.name "app.kubernetes.io/name" "dlaunch" -}}
{{- toYaml (merge $own (.Values.labels | default dict)) -}}
{{- end -}}

{{/* metadata of a top-level object. Context: dict root, name, labels (extra), annotations. */}}
{{- define "dlaunch.metadata" -}}
{{- $root := .root -}}
name: {{ .name }}
namespace: {{ $root.Values.namespace | default $root.Release.Namespace }}
labels:
  {{- include "dlaunch.labels" $root | fromYaml | merge (.labels | default dict) | toYaml | nindent 2 }}
{{- with .annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Kueue: the queue label on the workload object (empty without a queue). */}}
{{- define "dlaunch.queueLabels" -}}
{{- if .Values.queue -}}
{{- toYaml (dict "kueue.x-k8s.io/queue-name" .Values.queue) -}}
{{- end -}}
{{- end -}}

{{/* DNS name of pod 0 on the headless Service. */}}
{{- define "dlaunch.rendezvousHost" -}}
{{- printf "%s-0.%s.%s.svc" .Values.name .Values.name (.Values.namespace | default .Release.Namespace) -}}
{{- end -}}

{{/* requests = limits. Context: dict cpu, memory, gpus. */}}
{{- define "dlaunch.resources" -}}
{{- $amounts := dict -}}
{{- if not (kindIs "invalid" .cpu) }}{{ $_ := set $amounts "cpu" (toString .cpu) }}{{ end -}}
{{- if .memory }}{{ $_ := set $amounts "memory" (toString .memory) }}{{ end -}}
{{- if gt (int64 .gpus) 0 }}{{ $_ := set $amounts "nvidia.com/gpu" (toString (int64 .gpus)) }}{{ end -}}
limits:
  {{- toYaml $amounts | nindent 2 }}
requests:
  {{- toYaml $amounts | nindent 2 }}
{{- end -}}

{{/* Environment of containers that run the job's code. Context: dict root, torchrun (bool). */}}
{{- define "dlaunch.env" -}}
{{- $v := .root.Values -}}
- name: DLAUNCH_JOB
  value: {{ $v.name | toJson }}
- name: DLAUNCH_JOB_FILE
  value: /etc/dlaunch/job.json
- name: HOME
  value: /scratch
{{- if .torchrun }}
- name: DLAUNCH_RDZV_HOST
  value: {{ include "dlaunch.rendezvousHost" .root | toJson }}
- name: DLAUNCH_RDZV_PORT
  value: {{ int64 $v.rendezvous.port | toString | toJson }}
- name: DLAUNCH_RDZV_WAIT_TIMEOUT
  value: {{ int64 $v.rendezvous.joinTimeout | toString | toJson }}
- name: TORCH_ELASTIC_SHUTDOWN_TIMEOUT
  value: {{ int64 $v.terminationGrace | toString | toJson }}
{{- end }}
{{- range $name, $value := $v.env }}
- name: {{ $name }}
  value: {{ toString $value | toJson }}
{{- end }}
{{- $env := $v.env | default dict -}}
{{- with $v.secrets }}
{{- if .s3 }}
{{- if not (hasKey $env "AWS_ACCESS_KEY_ID") }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .s3 }}, key: AWS_ACCESS_KEY_ID}
{{- end }}
{{- if not (hasKey $env "AWS_SECRET_ACCESS_KEY") }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .s3 }}, key: AWS_SECRET_ACCESS_KEY}
{{- end }}
{{- if not (hasKey $env "AWS_ENDPOINT_URL") }}
- name: AWS_ENDPOINT_URL
  valueFrom:
    secretKeyRef: {name: {{ .s3 }}, key: AWS_ENDPOINT_URL, optional: true}
{{- end }}
{{- end }}
{{- if and .wandb (not (hasKey $env "WANDB_API_KEY")) }}
- name: WANDB_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ .wandb }}, key: WANDB_API_KEY}
{{- end }}
{{- end }}
{{- end -}}

{{/* The restricted Pod Security profile, container part. */}}
{{- define "dlaunch.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* Mounts of containers that run the job's code. */}}
{{- define "dlaunch.volumeMounts" -}}
volumeMounts:
- {name: job-config, mountPath: /etc/dlaunch, readOnly: true}
- {name: dshm, mountPath: /dev/shm}
- {name: scratch, mountPath: /scratch}
{{- end -}}

{{/* The job's ConfigMap, a memory-backed /dev/shm and scratch space. Context: dict root, shm. */}}
{{- define "dlaunch.volumes" -}}
volumes:
- name: job-config
  configMap:
    name: {{ .root.Values.name }}-config
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shm | toString | toJson }}
- name: scratch
  emptyDir: {}
{{- end -}}

{{/* Pod-spec fields every pod shares: identity, scheduling, security, grace period. */}}
{{- define "dlaunch.podSpec" -}}
{{- $v := .Values -}}
automountServiceAccountToken: false
{{- if $v.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClass }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.serviceAccount }}
serviceAccountName: {{ . }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  fsGroup: {{ int64 $v.runAsUser }}
  runAsGroup: {{ int64 $v.runAsUser }}
  runAsNonRoot: true
  runAsUser: {{ int64 $v.runAsUser }}
  seccompProfile:
    type: RuntimeDefault
terminationGracePeriodSeconds: {{ int64 $v.terminationGrace }}
{{- end -}}

{{/* Pod template metadata. */}}
{{- define "dlaunch.podMetadata" -}}
metadata:
  labels:
    {{- include "dlaunch.labels" . | nindent 4 }}
{{- end -}}
