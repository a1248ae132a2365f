"""Every name the webhook owns in an apiserver Pod, defined once.

The mutation recognises its own work by these names, so changing one is a breaking change.
"""

APISERVER_LABEL = ("app", "apiserver")
APISERVER_CONTAINER = "apiserver"
SIDECAR_CONTAINER = "audit-logs"

VOLUME_AUDIT_LOG = "audit-log"
VOLUME_AUDIT_CONFIG = "audit-config"
VOLUME_FLUENTBIT = "audit-logs-fluentbit"
VOLUME_WEBHOOK_BACKEND = "audit-webhook-backend"

CONFIGMAP_AUDIT_CONFIG = "audit-config"
SECRET_FLUENTBIT = "audit-logs-fluentbit"
POLICY_KEY = "policy.yaml"
WEBHOOK_CONFIG_KEY = "webhook.yaml"
FLUENTBIT_CLASSIC_KEY = "fluent-bit.conf"
FLUENTBIT_YAML_KEY = "fluent-bit.yaml"

AUDIT_LOG_DIR = "/var/log/kubernetes/audit"
AUDIT_LOG_PATH = f"{AUDIT_LOG_DIR}/audit.log"
AUDIT_CONFIG_DIR = "/etc/kubernetes/audit"
POLICY_PATH = f"{AUDIT_CONFIG_DIR}/{POLICY_KEY}"
WEBHOOK_CONFIG_DIR = f"{AUDIT_CONFIG_DIR}/webhook"
WEBHOOK_CONFIG_PATH = f"{WEBHOOK_CONFIG_DIR}/{WEBHOOK_CONFIG_KEY}"
FLUENTBIT_DIR = "/etc/fluent-bit/"

CLUSTER_ID_ENV = "CLUSTER_ID"

# Annotations: on the Pod (what was injected) and on the Cluster (opt-out of DC enforcement).
SETTINGS_HASH_ANNOTATION = "audit-webhook.kubermatic.k8c.io/settings-hash"
# On the apiserver Deployment's pod template: the creation time of the newest Pod a rollout replaced.
# A Pod with stale settings created after it (admitted by a replica that lagged) rolls it again.
ROLLED_PODS_ANNOTATION = "audit-webhook.kubermatic.k8c.io/replaced-pods-created-until"
# On the pod template (and so on its Pods): the digest of what kube-apiserver reads only at start
# from objects it mounts, the webhook backend's webhook.yaml and a user's own policy (settings_hash.mounted_digest).
MOUNTED_HASH_ANNOTATION = "audit-webhook.kubermatic.k8c.io/mounted-config-hash"
# On the apiserver Deployment's own metadata (never its pod template, so writing them rolls nothing):
# the settings hash its pod template's 0.1 hash stood for when first seen, and the mounted digest
# when first seen without one. They tell a later change from the upgrade.
MIGRATED_HASH_ANNOTATION = "audit-webhook.kubermatic.k8c.io/settings-hash-of-legacy"
MOUNTED_BASELINE_ANNOTATION = "audit-webhook.kubermatic.k8c.io/mounted-config-hash-at-adoption"
OPT_OUT_ANNOTATION = "kubermatic.k8c.io/skip-audit-logging-enforcement"

KKP_GROUP = "kubermatic.k8c.io"
KKP_API_VERSION = f"{KKP_GROUP}/v1"

# Seed annotations: what the operator allows the sidecars of that Seed's clusters beyond the defaults.
ALLOWED_PLUGINS_ANNOTATION = "audit-webhook.kubermatic.k8c.io/allowed-fluent-bit-plugins"
ALLOWED_KEYS_ANNOTATION = "audit-webhook.kubermatic.k8c.io/allowed-fluent-bit-keys"
ALLOW_RECORD_CHANGES_ANNOTATION = "audit-webhook.kubermatic.k8c.io/allow-record-changes"
RESOURCE_CEILING_ANNOTATION = "audit-webhook.kubermatic.k8c.io/sidecar-resource-ceiling"
