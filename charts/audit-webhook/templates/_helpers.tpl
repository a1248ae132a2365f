{{/* The image both Deployments run: <registry>/<repository>:<tag>[@<digest>]. */}}
{{- define "audit-webhook.image" -}}
{{- $image := .Values.image -}}
{{- $ref := printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- if $image.registry }}{{ $ref = printf "%s/%s" $image.registry $ref }}{{ end -}}
{{- if $image.digest }}{{ $ref = printf "%s@%s" $ref $image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{/* Flags that `serve` and `reconcile` share, so the two render every Pod alike. */}}
{{- define "audit-webhook.commonArgs" -}}
- --mode={{ .Values.mode }}
- --config=/etc/audit-webhook/config.yaml
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- with .Values.sidecar.image }}
- --sidecar-image={{ . }}
{{- end }}
{{- with .Values.sidecar.registry }}
- --sidecar-registry={{ . }}
{{- end }}
{{- with .Values.sidecar.fluentBitFormat }}
- --fluent-bit-format={{ . }}
{{- end }}
{{- end -}}

{{/* A webhook's clientConfig: the Service, or webhooks.url for a server outside the cluster. */}}
{{- define "audit-webhook.clientConfig" -}}
{{- if .root.Values.webhooks.url -}}
url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhooks.url) .path }}
{{- else -}}
service: {name: audit-webhook, namespace: {{ .root.Release.Namespace }}, path: {{ .path }}, port: 443}
{{- end -}}
{{- end -}}

{{/* Annotations of both webhook configurations: with cert-manager, its cainjector fills in the caBundle. */}}
{{- define "audit-webhook.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/audit-webhook
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations and priorityClassName of one Deployment's Pods (server or reconciler values). */}}
{{- define "audit-webhook.podPlacement" -}}
{{- with .nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
