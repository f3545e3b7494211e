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
  value: {{ include "dlaunch.elasticShutdownTimeout" $v | toJson }}
{{- end }}
{{- range $name, $value := $v.env }}
- name: {{ $name }}
  value: {{ toString $value | toJson }}
{{- end }}
{{- $env := $v.env | default dict -}}
{{- with $v.secrets }}
{{- if .s3 }}
{{- if not (hasKey $env "AWS_SHARED_CREDENTIALS_FILE") }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: /etc/dlaunch/secrets/s3/credentials
{{- end }}
{{- if not (hasKey $env "AWS_CONFIG_FILE") }}
- name: AWS_CONFIG_FILE
  value: /etc/dlaunch/secrets/s3/config
{{- end }}
{{- end }}
{{- if and .wandb (not (hasKey $env "NETRC")) }}
- name: NETRC
  value: /etc/dlaunch/secrets/wandb/netrc
{{- end }}
{{- end }}
{{- end -}}

{{/* The restricted Pod Security profile, container part, and a read-only root filesystem. */}}
{{- define "dlaunch.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
  readOnlyRootFilesystem: true
{{- end -}}

{{/* Mounts of containers that run the job's code: the job file, the writable emptyDirs and the
credential Secrets as read-only files. */}}
{{- define "dlaunch.volumeMounts" -}}
volumeMounts:
- {name: job-config, mountPath: /etc/dlaunch, readOnly: true}
- {name: dshm, mountPath: /dev/shm}
- {name: scratch, mountPath: /scratch}
- {name: tmp, mountPath: /tmp}
{{- with .Values.secrets }}
{{- if .s3 }}
- {name: s3-credentials, mountPath: /etc/dlaunch/secrets/s3, readOnly: true}
{{- end }}
{{- if .wandb }}
- {name: wandb-credentials, mountPath: /etc/dlaunch/secrets/wandb, readOnly: true}
{{- end }}
{{- end }}
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
- name: tmp
  emptyDir: {}
{{- with .root.Values.secrets }}
{{- if .s3 }}
- name: s3-credentials
  secret:
    secretName: {{ .s3 }}
    defaultMode: 288
{{- end }}
{{- if .wandb }}
- name: wandb-credentials
  secret:
    secretName: {{ .wandb }}
    defaultMode: 288
{{- end }}
{{- end }}
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

{{/* torch elastic's shutdown window: the grace period less a tenth (at least 5 s), at least 1 s,
as render.py elastic_shutdown_timeout; workers stop before the kubelet's SIGKILL. */}}
{{- define "dlaunch.elasticShutdownTimeout" -}}
{{- $grace := int64 .terminationGrace -}}
{{- max 1 (sub $grace (max 5 (div $grace 10))) | toString -}}
{{- end -}}

{{/* A Job's template and a RayJob's cluster spec are immutable: `helm upgrade` with changed
values would fail on them with a long API error. Where the release's workload exists with
another spec hash, fail early and say what to do. `lookup` is empty under `helm template`.
Context: dict root, apiVersion, kind. */}}
{{- define "dlaunch.refuseChangedJob" -}}
{{- $v := .root.Values -}}
{{- $ns := $v.namespace | default .root.Release.Namespace -}}
{{- $existing := lookup .apiVersion .kind $ns $v.name -}}
{{- if $existing -}}
{{- $hash := index ($existing.metadata.annotations | default dict) "dlaunch.dev/spec-hash" | default "" -}}
{{- if ne $hash $v.specHash -}}
{{- fail (printf "%s %s/%s exists with spec hash %q, these values have %q: a %s cannot be changed in place. Run `helm uninstall %s -n %s`, then `helm install` again (checkpoints are kept; the job resumes from the newest), or use `dlaunch submit --replace`." .kind $ns $v.name $hash $v.specHash .kind .root.Release.Name $ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Liveness and readiness probes of a Ray container, as render.py ray_probes: KubeRay's HTTP
health check with its timings. Context: the timeout in seconds (5 on the head, 2 on workers). */}}
{{- define "dlaunch.rayProbes" -}}
livenessProbe:
  httpGet: {path: /api/healthz, port: 52365}
  initialDelaySeconds: 30
  timeoutSeconds: {{ . }}
  periodSeconds: 5
  successThreshold: 1
  failureThreshold: 120
readinessProbe:
  httpGet: {path: /api/healthz, port: 52365}
  initialDelaySeconds: 10
  timeoutSeconds: {{ . }}
  periodSeconds: 5
  successThreshold: 1
  failureThreshold: 10
{{- end -}}
