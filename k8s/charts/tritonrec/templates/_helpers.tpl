{{/* Names and labels shared by the templates. */}}

{{- define "tritonrec.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name, or <release>-tritonrec when it does not say tritonrec. */}}
{{- define "tritonrec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tritonrec.triton.name" -}}
{{- printf "%s-triton" (include "tritonrec.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonrec.autoscaler.name" -}}
{{- printf "%s-autoscaler" (include "tritonrec.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonrec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tritonrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonrec
{{- end -}}

{{/* Selector labels of one component (triton, autoscaler). Call with (list $ "triton"). */}}
{{- define "tritonrec.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "tritonrec.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The container securityContext every container of the chart runs with. */}}
{{- define "tritonrec.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod securityContext; uid/gid 1000 is the triton-server user of the stock container. */}}
{{- define "tritonrec.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The model repository path Triton is started with. */}}
{{- define "tritonrec.repositoryPath" -}}
{{- $r := .Values.repository -}}
{{- if eq $r.source "objectStore" -}}
{{- $r.objectStore.url -}}
{{- else if and (eq $r.source "pvc") $r.pvc.subPath -}}
{{- printf "/models/%s" $r.pvc.subPath -}}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{/* The namespaces the autoscaler reconciles, as a JSON list: the release's, then autoscaler.namespaces. */}}
{{- define "tritonrec.autoscaler.namespaces" -}}
{{- prepend (.Values.autoscaler.namespaces | default list) .Release.Namespace | uniq | toJson -}}
{{- end -}}

{{/* The autoscaler's rules, one list for its per-namespace Roles and its ClusterRole (watchAllNamespaces). */}}
{{- define "tritonrec.autoscaler.rules" -}}
- apiGroups: ["tritonrec.io"]
  resources: ["tritonautoscalers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tritonrec.io"]
  resources: ["tritonautoscalers/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["endpoints"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
