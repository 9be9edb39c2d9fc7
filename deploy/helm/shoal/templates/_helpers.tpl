{{- define "shoal.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shoal.labels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "shoal.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Whether the init step and preStop hook change containerd's files. */}}
{{- define "shoal.configuresContainerd" -}}
{{- if or .Values.containerd.configureHosts .Values.containerd.runtimeClass.enabled }}true{{ end -}}
{{- end -}}

{{/* What shoal containerd config writes and removes: the hosts.toml files
and the runtime drop-in, each if asked for. */}}
{{- define "shoal.containerdArgs" -}}
{{- if .Values.containerd.configureHosts }}
{{ include "shoal.hostsArgs" . }}
{{- end }}
{{- if .Values.containerd.runtimeClass.enabled }}
- --runtime
- {{ .Values.containerd.runtimeClass.name | quote }}
- --drop-in
- /host/conf.d/{{ base .Values.containerd.runtimeClass.dropIn }}
- --containerd-config
- /host/containerd-config/{{ base .Values.containerd.runtimeClass.configFile }}
{{- end }}
{{- end -}}

{{/* The hosts.toml files containerd reads: the node's own registry (images
by CID, plain HTTP on loopback) and every mirrored registry. */}}
{{- define "shoal.hostsArgs" -}}
- --hosts-dir
- /host/certs.d
- --mirror
- "127.0.0.1:{{ .Values.registryPort }}=http://127.0.0.1:{{ .Values.registryPort }}"
{{- range .Values.mirror.registries }}
- --mirror
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* containerd's directories the init step and the preStop hook write. */}}
{{- define "shoal.containerdMounts" -}}
{{- if .Values.containerd.configureHosts }}
- name: certs
  mountPath: /host/certs.d
{{- end }}
{{- if .Values.containerd.runtimeClass.enabled }}
- name: conf-d
  mountPath: /host/conf.d
{{- end }}
{{- end -}}
