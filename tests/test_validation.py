"""Validation of Clusters, Seeds and ConfigMaps: every rule, its exact kubectl-style message."""

from pathlib import Path

import pytest

from tests.helpers import KUBECONFIG, cluster, kkp_pod, seed, webhook_backend
from webhook.core.names import OPT_OUT_ANNOTATION
from webhook.core.operator_config import OperatorConfig
from webhook.core.validation.admission import check_admission, secret_refs
from webhook.core.validation.context import Context
from webhook.core.validation.errors import invalid_message

GOOD_SECRET = {"webhook.yaml": KUBECONFIG.encode()}
SECRETS = {("cluster-abc", "wh"): GOOD_SECRET, ("kubermatic", "dc-wh"): GOOD_SECRET}
P = "spec.auditLogging"
SC = f"{P}.sidecar"
CFG = f"{SC}.config"


def errors_of(obj, seed_obj=None, secrets=SECRETS, old=None):
    return [str(e) for e in check_admission(obj, old, Context(seed=seed_obj, secrets=secrets)).errors]


def warnings_of(obj, seed_obj=None, secrets=SECRETS):
    return check_admission(obj, None, Context(seed=seed_obj, secrets=secrets)).warnings


def sidecar_cluster(**config):
    return cluster(audit={"enabled": True, "sidecar": {"config": config}})


CLUSTER_ERRORS = [
    ("preset", cluster(audit={"enabled": True, "policyPreset": "verbose"}),
     [f'{P}.policyPreset: Unsupported value: "verbose": supported values: "", "metadata", "minimal", "recommended"']),
    ("enabled-not-bool", cluster(audit={"enabled": "yes"}), [f'{P}.enabled: Invalid value: "yes": must be true or false']),
    ("audit-not-map", cluster(audit=["x"]),
     [f'{P}: Invalid value: ["x"]: must be a map with `enabled`, `policyPreset`, `sidecar`, `webhookBackend`']),
    ("service-not-map", sidecar_cluster(service=["Flush 1"]),
     [f'{CFG}.service: Invalid value: ["Flush 1"]: must be a map of string keys to string values']),
    ("service-int-value", sidecar_cluster(service={"Flush": 10}),
     [f'{CFG}.service[Flush]: Invalid value: 10: must be a string (quote it: "10")']),
    ("newline-value", sidecar_cluster(service={"Flush": "1\n[OUTPUT]\n    Name http"}),
     [f'{CFG}.service[Flush]: Invalid value: "1\\n[OUTPUT]\\n    Name http": must not contain line breaks, tabs or '
      "other control characters (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029, U+FEFF): a parser on the way would "
      "start a new line there"]),
    ("carriage-return", sidecar_cluster(outputs=[{"Name": "stdout", "Match": "*\r@INCLUDE x"}]),
     [f'{CFG}.outputs[0][Match]: Invalid value: "*\\r@INCLUDE x": must not contain line breaks, tabs or other '
      "control characters (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029, U+FEFF): a parser on the way would start a "
      "new line there"]),
    ("nul", sidecar_cluster(filters=[{"Name": "grep", "Match": "*", "Regex": "a\x00b"}]),
     [f'{CFG}.filters[0][Regex]: Invalid value: "a\\u0000b": must not contain line breaks, tabs or other '
      "control characters (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029, U+FEFF): a parser on the way would start a "
      "new line there"]),
    ("include-key", sidecar_cluster(service={"@INCLUDE": "/etc/passwd"}),
     [f'{CFG}.service: Invalid value: "@INCLUDE": a fluent-bit key must consist of letters, digits, \'_\', \'.\' or '
      "'-' and start with a letter or digit (no spaces, brackets, '@', '#', '$' or line breaks)"]),
    ("bracket-key", sidecar_cluster(filters=[{"Name": "grep", "Match": "*", "[OUTPUT]": "x"}]), 1),
    ("space-key", sidecar_cluster(filters=[{"Name": "grep", "Match": "*", "Re gex": "x"}]), 1),
    ("tab-key", sidecar_cluster(filters=[{"Name": "grep", "Match": "*", "Re\tgex": "x"}]), 1),
    ("set-key", sidecar_cluster(service={"@SET": "a=b"}), 1),
    ("comment-key", sidecar_cluster(service={"#x": "a"}), 1),
    ("empty-value", sidecar_cluster(service={"Flush": "  "}),
     [f'{CFG}.service[Flush]: Invalid value: "  ": must not be empty: fluent-bit refuses a key without a value']),
    ("daemon", sidecar_cluster(service={"daemon": "On"}),
     [f"{CFG}.service[daemon]: Forbidden: fluent-bit would fork into the background and the sidecar container "
      "would exit and restart forever"]),
    ("filter-without-name", sidecar_cluster(filters=[{"Match": "*", "Regex": "x"}]),
     [f'{CFG}.filters[0][Name]: Required value: every filter names its fluent-bit plugin, e.g. "alter_size"']),
    ("output-without-name", sidecar_cluster(outputs=[{"Match": "*"}]),
     [f'{CFG}.outputs[0][Name]: Required value: every output names its fluent-bit plugin, e.g. "azure"']),
    ("output-without-match", sidecar_cluster(outputs=[{"Name": "stdout"}]),
     [f'{CFG}.outputs[0][Match]: Required value: every output needs "Match" or "Match_Regex"; "*" matches the '
      "audit log"]),
    ("unknown-plugin", sidecar_cluster(outputs=[{"Name": "carrier-pigeon", "Match": "*"}]), 1),
    ("duplicate-name", sidecar_cluster(outputs=[{"Name": "stdout", "name": "http", "Match": "*"}]),
     [f'{CFG}.outputs[0][name]: Duplicate value: "name": fluent-bit keys are case-insensitive and the last one '
      "wins; set each key once"]),
    ("filters-not-list", sidecar_cluster(filters={"Name": "grep"}), 1),
    ("filter-not-map", sidecar_cluster(filters=["Name grep"]), 1),
    ("env-valuefrom", cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}),
     [f"{SC}.extraEnvs[0].valueFrom: Forbidden: only `value` is supported"]),
    ("env-bad-name", cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [{"name": "1A", "value": "x"}]}}),
     [f'{SC}.extraEnvs[0].name: Invalid value: "1A": a valid environment variable name must consist of alphabetic '
      "characters, digits, '_', '-', or '.', and must not start with a digit"]),
    ("env-duplicate", cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [
        {"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}),
     [f'{SC}.extraEnvs[1].name: Duplicate value: "A"']),
    ("env-cluster-id", cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [{"name": "CLUSTER_ID", "value": "x"}]}}),
     [f"{SC}.extraEnvs[0].name: Forbidden: CLUSTER_ID is set by the webhook to the cluster ID and cannot be overridden"]),
    ("env-no-name", cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [{"value": "x"}]}}),
     [f"{SC}.extraEnvs[0].name: Required value"]),
    ("bad-quantity", cluster(audit={"enabled": True, "sidecar": {"resources": {"limits": {"memory": "lots"}}}}),
     [f"{SC}.resources.limits[memory]: Invalid value: \"lots\": must match the regular expression "
      "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"]),
    ("negative-quantity", cluster(audit={"enabled": True, "sidecar": {"resources": {"requests": {"cpu": "-1"}}}}),
     [f'{SC}.resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0']),
    ("request-above-limit", cluster(audit={"enabled": True, "sidecar": {"resources": {
        "requests": {"memory": "100Mi"}, "limits": {"memory": "60Mi"}}}}),
     [f'{SC}.resources.requests[memory]: Invalid value: "100Mi": must be less than or equal to memory limit of 60Mi']),
    ("webhook-missing-key", cluster(audit={"webhookBackend": webhook_backend("nokey")}),
     [f'{P}.webhookBackend.auditWebhookConfig: Invalid value: "cluster-abc/nokey": the Secret has no key '
      '"webhook.yaml" (the audit webhook kubeconfig that kube-apiserver reads)']),
    ("webhook-broken-kubeconfig", cluster(audit={"webhookBackend": webhook_backend("broken")}),
     [f'{P}.webhookBackend.auditWebhookConfig: Invalid value: "cluster-abc/broken": webhook.yaml has no '
      "current-context: kube-apiserver would not start"]),
    ("webhook-no-ref", cluster(audit={"webhookBackend": {"auditWebhookInitialBackoff": "5s"}}),
     [f'{P}.webhookBackend.auditWebhookConfig: Required value: the Secret (name, namespace) with key "webhook.yaml"']),
    ("webhook-no-name", cluster(audit={"webhookBackend": {"auditWebhookConfig": {"namespace": "cluster-abc"}}}),
     [f"{P}.webhookBackend.auditWebhookConfig.name: Required value"]),
    ("webhook-other-namespace", cluster(audit={"webhookBackend": webhook_backend("dc-wh", namespace="kubermatic")}),
     [f'{P}.webhookBackend.auditWebhookConfig.namespace: Forbidden: a cluster may only use Secrets of its own '
      'namespace "cluster-abc"']),
    ("backoff-not-duration", cluster(audit={"webhookBackend": webhook_backend(backoff="10")}),
     [f'{P}.webhookBackend.auditWebhookInitialBackoff: Invalid value: "10": must be a Go duration such as "10s", '
      '"500ms" or "1m30s"']),
    ("backoff-negative", cluster(audit={"webhookBackend": webhook_backend(backoff="-5s")}),
     [f'{P}.webhookBackend.auditWebhookInitialBackoff: Invalid value: "-5s": must not be negative']),
]

# The rule each case of CLUSTER_ERRORS breaks: what metrics, the decision log and the messages name.
RULE_OF_CASE = {
    "preset": "audit.preset-supported", "enabled-not-bool": "audit.enabled-bool", "audit-not-map": "object.field-type",
    "service-not-map": "sidecar.map-shape", "service-int-value": "sidecar.value-string",
    "newline-value": "sidecar.characters", "carriage-return": "sidecar.characters", "nul": "sidecar.characters",
    "include-key": "sidecar.key-form", "bracket-key": "sidecar.key-form", "space-key": "sidecar.key-form",
    "tab-key": "sidecar.key-form", "set-key": "sidecar.key-form", "comment-key": "sidecar.key-form",
    "empty-value": "sidecar.value-empty", "daemon": "sidecar.service", "filter-without-name": "sidecar.plugin-name",
    "output-without-name": "sidecar.plugin-name", "output-without-match": "sidecar.match-required",
    "unknown-plugin": "sidecar.plugin-known", "duplicate-name": "sidecar.key-duplicate",
    "filters-not-list": "object.field-type", "filter-not-map": "sidecar.map-shape", "env-valuefrom": "sidecar.env",
    "env-bad-name": "sidecar.env", "env-duplicate": "sidecar.env", "env-cluster-id": "sidecar.env",
    "env-no-name": "sidecar.env", "bad-quantity": "sidecar.resources", "negative-quantity": "sidecar.resources",
    "request-above-limit": "sidecar.resources", "webhook-missing-key": "webhook.secret-key",
    "webhook-broken-kubeconfig": "webhook.kubeconfig", "webhook-no-ref": "webhook.reference",
    "webhook-no-name": "webhook.reference", "webhook-other-namespace": "webhook.secret-namespace",
    "backoff-not-duration": "webhook.backoff", "backoff-negative": "webhook.backoff",
}

MORE_SECRETS = {**SECRETS, ("cluster-abc", "nokey"): {"other": b"x"},
                ("cluster-abc", "broken"): {"webhook.yaml": b"apiVersion: v1\nkind: Config\n"}}


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in CLUSTER_ERRORS], ids=[c[0] for c in CLUSTER_ERRORS])
def test_cluster_rules(obj, expected):
    errors = errors_of(obj, secrets=MORE_SECRETS)
    if isinstance(expected, int):
        assert len(errors) == expected, errors
    else:
        assert errors == expected


@pytest.mark.parametrize(("case_id", "obj"), [c[:2] for c in CLUSTER_ERRORS], ids=[c[0] for c in CLUSTER_ERRORS])
def test_each_error_names_its_rule_in_the_message(case_id, obj):
    errors = check_admission(obj, None, Context(secrets=MORE_SECRETS)).errors
    assert {e.rule for e in errors} == {RULE_OF_CASE[case_id]}
    message = invalid_message("Cluster.kubermatic.k8c.io", "abc", errors[:1])
    assert message == f'Cluster.kubermatic.k8c.io "abc" is invalid: {errors[0]} [{RULE_OF_CASE[case_id]}]'


def test_every_problem_is_reported_at_once():
    obj = cluster(audit={"enabled": True, "policyPreset": "x", "sidecar": {
        "extraEnvs": [{"name": "CLUSTER_ID", "value": "y"}],
        "config": {"outputs": [{"Match": "*"}], "service": {"Flush": 1}}},
        "webhookBackend": webhook_backend("missing", backoff="forever")})
    errors = errors_of(obj)
    assert len(errors) == 5  # the missing Secret is a warning on CREATE (see below)
    message = invalid_message("Cluster.kubermatic.k8c.io", "abc", check_admission(obj, None, Context(secrets=SECRETS)).errors)
    assert message.startswith('Cluster.kubermatic.k8c.io "abc" is invalid: [spec.auditLogging.policyPreset: ')
    assert message.endswith("]")


def test_a_valid_cluster_passes():
    obj = cluster(audit={
        "enabled": True, "policyPreset": "recommended",
        "sidecar": {"resources": {"requests": {"cpu": "5m", "memory": "10Mi"}, "limits": {"cpu": 1, "memory": "60Mi"}},
                    "extraEnvs": [{"name": "TEAM", "value": "payments"}],
                    "config": {"service": {"Flush": "10"},
                               "filters": [{"Name": "grep", "Match": "*", "Regex": "log user@example.com"},
                                           {"name": "record_modifier", "match": "*", "Record": "team ${TEAM}"}],
                               "outputs": [{"Name": "forward", "Match_Regex": ".*", "Host": "fluentd.logging.svc",
                                            "Port": "24224"}]}},
        "webhookBackend": webhook_backend("wh", backoff="1m30s")})
    found = check_admission(obj, None, Context(secrets=SECRETS, config=OperatorConfig.model_validate({"egress": {"namespaces": ["logging"]}})))
    assert found.errors == []
    assert found.warnings == []


def test_no_audit_logging_at_all_is_valid():
    assert errors_of(cluster()) == []


SEED_WITH = seed({"dc1": {"enforceAuditLogging": True}}, audit={"enabled": True, "policyPreset": "minimal"})


@pytest.mark.parametrize(("obj", "seed_obj", "warning"), [
    (cluster(audit={"enabled": False}), seed({"dc1": {"enforceAuditLogging": True}}),
     'spec.auditLogging.enabled: ignored: datacenter "dc1" enforces audit logging'),
    (cluster(audit={"enabled": False, "policyPreset": "metadata"}), SEED_WITH,
     "spec.auditLogging: ignored: datacenter \"dc1\" enforces audit logging with the Seed's settings"),
    (cluster(annotations={OPT_OUT_ANNOTATION: "true"}), SEED_WITH,
     'metadata.annotations: the cluster opts out of audit logging enforced by datacenter "dc1"'),
    (cluster(annotations={OPT_OUT_ANNOTATION: "True"}), None,
     f'metadata.annotations: {OPT_OUT_ANNOTATION}: only "true" opts out'),
    (cluster(audit={"webhookBackend": webhook_backend()}),
     seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dc-wh"}}}}),
     'spec.auditLogging.webhookBackend: ignored: datacenter "dc1" enforces its own webhook backend'),
    (cluster(audit={"sidecar": {"config": {"service": {"Flush": "1"}}}}), None,
     "spec.auditLogging.sidecar: has no effect while audit logging is off"),
    (cluster(audit={"policyPreset": "minimal"}), None,
     "spec.auditLogging.policyPreset: has no effect while audit logging and the webhook backend are off"),
])
def test_risky_but_valid_settings_warn(obj, seed_obj, warning):
    found = check_admission(obj, None, Context(seed=seed_obj, secrets=SECRETS))
    assert found.errors == []
    assert warning in found.warnings
    assert all(len(w) <= 256 and w.isprintable() for w in found.warnings)


def test_plain_http_webhook_server_warns_without_quoting_the_secret():
    http = KUBECONFIG.replace("https://audit-sink.audit.svc:8443/events", "http://10.1.2.3:30001")
    found = check_admission(cluster(audit={"webhookBackend": webhook_backend()}), None, Context(secrets={("cluster-abc", "wh"): {"webhook.yaml": http.encode()}}))
    assert found.errors == []
    assert found.warnings == ["spec.auditLogging.webhookBackend.auditWebhookConfig: the Secret's webhook.yaml sends "
                              "events over plain http://"]
    assert "10.1.2.3" not in str(found)


def test_update_is_not_refused_for_what_the_old_object_already_had():
    bad = cluster(audit={"webhookBackend": webhook_backend("gone")})
    newer = cluster(audit={"webhookBackend": webhook_backend("gone")}, humanReadableName="renamed")
    found = check_admission(newer, bad, Context(secrets=SECRETS))
    assert found.errors == []
    # The warning keeps what was wrong, and the rule.
    assert found.warnings == ["spec.auditLogging.webhookBackend.auditWebhookConfig: wrong before this update too, "
                              'please fix: Not found: "cluster-abc/gone": create the Secret with key "webhook.yaml" '
                              "holding the audit webhook kubeconfig first [webhook.secret-exists]"]
    assert found.warning_rules == ["webhook.secret-exists"]
    # A new problem in the same update is still refused.
    worse = cluster(audit={"webhookBackend": webhook_backend("gone"), "policyPreset": "x"})
    assert errors_of(worse, old=bad) == [
        'spec.auditLogging.policyPreset: Unsupported value: "x": supported values: "", "metadata", "minimal", "recommended"']


DC = "spec.datacenters[dc1].spec"


@pytest.mark.parametrize(("obj", "expected"), [
    (seed({"dc1": {"enforceAuditLogging": "yes"}}), [f'{DC}.enforceAuditLogging: Invalid value: "yes": must be true or false']),
    (seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "missing"}}}}),
     [f'{DC}.enforcedAuditWebhookSettings.auditWebhookConfig: Not found: "kubermatic/missing": create the Secret with '
      'key "webhook.yaml" holding the audit webhook kubeconfig first']),
    (seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dc-wh"},
                                                    "auditWebhookInitialBackoff": "soon"}}}),
     [f'{DC}.enforcedAuditWebhookSettings.auditWebhookInitialBackoff: Invalid value: "soon": must be a Go duration '
      'such as "10s", "500ms" or "1m30s"']),
    (seed({"dc1": {}}, audit={"enabled": True, "policyPreset": "everything"}),
     ['spec.auditLogging.policyPreset: Unsupported value: "everything": supported values: "", "metadata", "minimal", '
      '"recommended"']),
    (seed({"dc1": {}}, audit={"sidecar": {"config": {"outputs": [{"Name": "http", "Match": "*", "Host": "a\nb"}]}}}), 1),
    (seed({"dc1": {"enforceAuditLogging": True,
                   "enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dc-wh", "namespace": "kubermatic"},
                                                    "auditWebhookInitialBackoff": "15s"}}},
          audit={"enabled": True, "policyPreset": "recommended"}), []),
    (seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dc-wh", "namespace": "other"}}}}),
     [f'{DC}.enforcedAuditWebhookSettings.auditWebhookConfig: Not found: "other/dc-wh": create the Secret with key '
      '"webhook.yaml" holding the audit webhook kubeconfig first']),
])
def test_seed_rules(obj, expected):
    errors = errors_of(obj)
    if isinstance(expected, int):
        assert len(errors) == expected, errors
    else:
        assert errors == expected


def test_seed_warns_when_enforcement_overrides_its_own_enabled_false():
    obj = seed({"dc1": {"enforceAuditLogging": True}}, audit={"enabled": False})
    assert check_admission(obj, None, Context(secrets=SECRETS)).warnings == [
        "spec.auditLogging.enabled: forced to true in the datacenters that enforce audit logging"]


def test_secret_refs_name_what_the_rules_will_read():
    obj = seed({"a": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "x"}}},
                "b": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "y", "namespace": "n"}}}},
               audit={"webhookBackend": webhook_backend("z")})
    assert secret_refs(obj) == [("kubermatic", "x"), ("kubermatic", "z"), ("n", "y")]
    assert secret_refs(cluster(audit={"webhookBackend": webhook_backend()})) == [("cluster-abc", "wh")]
    assert secret_refs({"kind": "Pod"}) == []


def configmap(policy, name="audit-config"):
    data = {} if policy is None else {"policy.yaml": policy}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "cluster-abc"}, "data": data}


@pytest.mark.parametrize(("obj", "expected"), [
    (configmap("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"), []),
    (configmap(None), ["data[policy.yaml]: Required value: the audit policy that kube-apiserver loads"]),
    (configmap("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n"),
     ["data[policy.yaml].rules: Required value: a policy needs at least one rule, e.g. `- level: Metadata`"]),
    (configmap("rules: [\n"), ['data[policy.yaml]: Invalid value: "<policy.yaml>": is not valid YAML at line 2, column 1']),
    (configmap("not a policy", name="other"), []),
])
def test_audit_config_configmap_rules(obj, expected):
    assert errors_of(obj) == expected


def test_a_preset_owns_the_policy_configmap():
    from webhook.core import presets
    from webhook.core.settings import effective_settings

    owner = effective_settings(cluster(audit={"enabled": True, "policyPreset": "minimal"}), None)
    edited = configmap("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n")
    assert [str(e) for e in check_admission(edited, None, Context(secrets=SECRETS, owner=owner)).errors] == [
        'data[policy.yaml]: Forbidden: cluster "abc" uses the audit policy preset "minimal", which records "create '
        'pods" at RequestResponse or more; this policy gives None (and 18 more short). To write your own, first set '
        'spec.auditLogging.policyPreset to "" on the Cluster']
    assert check_admission(configmap(presets.policy_text("minimal")), None, Context(secrets=SECRETS, owner=owner)).errors == []
    custom = effective_settings(cluster(audit={"enabled": True}), None)
    assert check_admission(edited, None, Context(secrets=SECRETS, owner=custom)).errors == []


def test_deleting_what_a_running_apiserver_needs_is_refused():
    from webhook.core.settings import effective_settings
    from webhook.core.validation.admission import deletion_blockers, deletion_message

    dc_seed = seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dcwh", "namespace": "kubermatic"}}}})
    users = [(c, effective_settings(c, dc_seed)) for c in (cluster(name="a"), cluster(name="b"))]
    users.append((cluster(name="c", audit={"enabled": True}), effective_settings(cluster(name="c", audit={"enabled": True}), None)))
    gone = cluster(name="d", audit={"enabled": True})
    gone["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    users.append((gone, effective_settings(gone, None)))
    dc_secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dcwh", "namespace": "kubermatic"}}
    assert deletion_blockers(dc_secret, "kubermatic", users) == ["a", "b"]
    assert deletion_blockers({**dc_secret, "metadata": {"name": "dcwh"}}, "cluster-a", users) == ["a"]  # the copy
    assert deletion_blockers({**dc_secret, "metadata": {"name": "other"}}, "kubermatic", users) == []
    assert deletion_blockers(configmap("x"), "cluster-c", users) == ["c"]
    assert deletion_blockers(configmap("x"), "cluster-d", users) == []  # its cluster is being deleted
    assert deletion_message(dc_secret, "kubermatic", ["a", "b"]) == (
        'Secret "kubermatic/dcwh" is in use: clusters "a", "b" need it as the configuration of their audit webhook '
        "backend; turn that off in the Cluster (or the datacenter's settings) first")


def test_a_zero_backoff_is_accepted_as_kkp_and_kube_apiserver_accept_it():
    assert errors_of(cluster(audit={"webhookBackend": webhook_backend(backoff="0s")})) == []


ENFORCED_WEBHOOK = {"auditWebhookConfig": {"name": "dc-wh", "namespace": "kubermatic"},
                    "auditWebhookInitialBackoff": "10s"}
SEED_ENFORCING_WEBHOOK = seed({"dc1": {"enforceAuditLogging": True, "enforcedAuditWebhookSettings": ENFORCED_WEBHOOK}})
DC_SECRETS = {**SECRETS, ("kubermatic", "dc-wh"): {"webhook.yaml": KUBECONFIG.encode()},
              ("kubermatic", "other"): {"webhook.yaml": KUBECONFIG.encode()}}


def test_a_cluster_as_kkp_defaulting_writes_it_names_its_datacenters_secret():
    """KKP copies the datacenter's enforcedAuditWebhookSettings verbatim, Seed namespace and all."""
    kkp = cluster(audit={"enabled": True, "webhookBackend": ENFORCED_WEBHOOK})
    assert check_admission(kkp, None, Context(seed=SEED_ENFORCING_WEBHOOK, secrets=DC_SECRETS)).errors == []
    # Only that Secret: any other of the Seed's namespace stays forbidden, and so does the same
    # reference where the datacenter does not enforce it.
    other = cluster(audit={"enabled": True, "webhookBackend": {"auditWebhookConfig": {"name": "other",
                                                                                      "namespace": "kubermatic"}}})
    assert [str(e) for e in check_admission(other, None, Context(seed=SEED_ENFORCING_WEBHOOK, secrets=DC_SECRETS)).errors] == [
        f'{P}.webhookBackend.auditWebhookConfig.namespace: Forbidden: a cluster may only use Secrets of its own '
        'namespace "cluster-abc" or its datacenter\'s "kubermatic/dc-wh"']
    assert len(check_admission(kkp, None, Context(seed=seed({"dc1": {}}), secrets=DC_SECRETS)).errors) == 1


def test_warnings_are_never_cut_mid_sentence():
    """A long user key shortens the field path, never the sentence after it."""
    key = "k" * 400
    obj = cluster(audit={"enabled": False, key: "x"})
    (w,) = [w for w in warnings_of(obj) if "unknown field" in w]
    assert len(w) <= 256 and w.endswith(": unknown field, ignored") and "..." in w
    long_text = [w for w in warnings_of(cluster(audit={"sidecar": {"config": {}}}))]
    assert long_text == ["spec.auditLogging.sidecar: has no effect while audit logging is off"]


KKP_POLICIES = Path(__file__).resolve().parents[2] / "shared/kkp/audit-policies"


@pytest.mark.parametrize("preset", ["metadata", "minimal", "recommended"])
def test_kkps_own_policy_text_is_accepted_for_its_preset(preset):
    """KKP's controllers write their own text for each preset into audit-config; refusing it would stop
    KKP from creating the control plane (it reconciles ConfigMaps before Deployments)."""
    from webhook.core.settings import effective_settings

    owner = effective_settings(cluster(audit={"enabled": True, "policyPreset": preset}), None)
    text = (KKP_POLICIES / f"{preset}.yaml").read_text(encoding="utf-8")
    assert check_admission(configmap(text), None, Context(secrets=SECRETS, owner=owner)).errors == []


def test_a_policy_that_records_less_than_its_preset_promises_is_refused():
    from webhook.core.settings import effective_settings

    owner = effective_settings(cluster(audit={"enabled": True, "policyPreset": "recommended"}), None)
    kkp_minimal = (KKP_POLICIES / "minimal.yaml").read_text(encoding="utf-8")  # None for reads, not Metadata
    (error,) = check_admission(configmap(kkp_minimal), None, Context(secrets=SECRETS, owner=owner)).errors
    assert 'preset "recommended", which records "get pods" at Metadata or more; this policy gives None' in str(error)


def test_deleting_the_cluster_or_seed_crd_is_refused_unless_annotated():
    from webhook.core.validation.admission import ALLOW_CRD_DELETION_ANNOTATION, crd_deletion_message

    def crd(name, **annotations):
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name, "annotations": annotations}}

    assert crd_deletion_message(crd("seeds.kubermatic.k8c.io")).startswith(
        'CustomResourceDefinition "seeds.kubermatic.k8c.io" is protected: deleting it deletes every Seed with it.')
    assert crd_deletion_message(crd("clusters.kubermatic.k8c.io", **{ALLOW_CRD_DELETION_ANNOTATION: "true"})) == ""
    assert crd_deletion_message(crd("machines.cluster.k8s.io")) == ""


def test_the_ratchet_excuses_an_old_error_only_while_its_value_is_unchanged():
    """A Cluster that already names a foreign Secret may keep it on UPDATE (KKP updates Clusters all
    the time), but not switch to another tenant's."""
    def naming(ns, name="wh"):
        return cluster(audit={"webhookBackend": {"auditWebhookConfig": {"name": name, "namespace": ns}}})

    secrets = {**SECRETS, ("cluster-other", "wh"): {"webhook.yaml": KUBECONFIG.encode()},
               ("cluster-victim", "wh"): {"webhook.yaml": KUBECONFIG.encode()}}
    old = naming("cluster-other")
    same = check_admission(naming("cluster-other"), old, Context(secrets=secrets))
    assert same.errors == [] and any("wrong before this update too" in w for w in same.warnings)
    switched = check_admission(naming("cluster-victim"), old, Context(secrets=secrets))
    assert [e.path for e in switched.errors] == ["spec.auditLogging.webhookBackend.auditWebhookConfig.namespace"]


def test_a_cluster_kkp_defaulted_with_the_seeds_own_webhook_backend_is_accepted():
    seed_hook = {"auditWebhookConfig": {"name": "seed-hook", "namespace": "kubermatic"}}
    s = seed({"dc1": {"enforceAuditLogging": True}}, audit={"enabled": True, "webhookBackend": seed_hook})
    kkp = cluster(audit={"enabled": True, "webhookBackend": seed_hook})
    secrets = {**SECRETS, ("kubermatic", "seed-hook"): {"webhook.yaml": KUBECONFIG.encode()}}
    assert check_admission(kkp, None, Context(seed=s, secrets=secrets)).errors == []
    # Not where the datacenter does not enforce: then nothing of KKP's put it there.
    relaxed = seed({"dc1": {}}, audit={"enabled": True, "webhookBackend": seed_hook})
    assert len(check_admission(kkp, None, Context(seed=relaxed, secrets=secrets)).errors) == 1


def test_the_preset_promise_binds_only_while_audit_logging_is_on():
    """With only a webhook backend KKP writes its default policy, whatever the preset says."""
    from webhook.core.settings import effective_settings

    owner = effective_settings(cluster(audit={"policyPreset": "recommended", "webhookBackend": webhook_backend()}),
                               None)
    kkp_metadata = (KKP_POLICIES / "metadata.yaml").read_text(encoding="utf-8")
    kkp_minimal = (KKP_POLICIES / "minimal.yaml").read_text(encoding="utf-8")
    for text in (kkp_metadata, kkp_minimal):
        assert check_admission(configmap(text), None, Context(secrets=SECRETS, owner=owner)).errors == []


def test_a_missing_webhook_secret_of_its_own_namespace_may_follow_a_new_cluster():
    """KKP creates cluster-<id> after the Cluster, so on CREATE the Secret cannot exist yet: a warning.
    Naming a missing Secret on UPDATE is an error, and so is a missing one of another namespace."""
    new = cluster(audit={"webhookBackend": webhook_backend("nope")})
    created = check_admission(new, None, Context(secrets=SECRETS))
    assert created.errors == []
    assert created.warnings == ['spec.auditLogging.webhookBackend.auditWebhookConfig: Secret cluster-abc/nope does '
                                "not exist yet; the apiserver waits for it [webhook.secret-exists]"]
    assert created.warning_rules == ["webhook.secret-exists"]
    assert errors_of(new, old=cluster(audit={"webhookBackend": webhook_backend()})) == [
        f'{P}.webhookBackend.auditWebhookConfig: Not found: "cluster-abc/nope": create the Secret with key '
        '"webhook.yaml" holding the audit webhook kubeconfig first']


def _dcs(name, *dcs):
    return seed({dc: {} for dc in dcs}, name=name)


# case, Seeds stored, the Seed admitted, its old version (UPDATE) or None, errors, warnings
DATACENTER_UNIQUE = [
    ("new-datacenter", [_dcs("a", "dc1")], _dcs("b", "dc2"), None, [], []),
    ("taken-on-create", [_dcs("a", "dc1")], _dcs("b", "dc1", "dc2"), None,
     ['spec.datacenters[dc1]: Duplicate value: "dc1": Seed "a" defines this datacenter already'], []),
    ("taken-by-two", [_dcs("a", "dc1"), _dcs("c", "dc3")], _dcs("b", "dc1", "dc3"), None,
     ['spec.datacenters[dc1]: Duplicate value: "dc1": Seed "a" defines this datacenter already',
      'spec.datacenters[dc3]: Duplicate value: "dc3": Seed "c" defines this datacenter already'], []),
    ("the-seed-itself", [_dcs("a", "dc1")], _dcs("a", "dc1", "dc2"), _dcs("a", "dc1"), [], []),
    # Stored before the rule: updates go on, with a warning; a newly taken datacenter is refused.
    ("ratchet-kept", [_dcs("a", "dc1"), _dcs("b", "dc1")], _dcs("b", "dc1", "dc2"), _dcs("b", "dc1"), [],
     ['spec.datacenters[dc1]: wrong before this update too, please fix: Duplicate value: "dc1": Seed "a" defines '
      "this datacenter already [seed.datacenter-unique]"]),
    ("ratchet-new-one", [_dcs("a", "dc1", "dc2"), _dcs("b", "dc1")], _dcs("b", "dc1", "dc2"), _dcs("b", "dc1"),
     ['spec.datacenters[dc2]: Duplicate value: "dc2": Seed "a" defines this datacenter already'],
     ['spec.datacenters[dc1]: wrong before this update too, please fix: Duplicate value: "dc1": Seed "a" defines '
      "this datacenter already [seed.datacenter-unique]"]),
]


@pytest.mark.parametrize(("stored", "obj", "old", "errors", "warnings"), [c[1:] for c in DATACENTER_UNIQUE],
                         ids=[c[0] for c in DATACENTER_UNIQUE])
def test_a_datacenter_belongs_to_one_seed(stored, obj, old, errors, warnings):
    """Judged against the API store's cache, which (unlike a snapshot of files) may hold two Seeds of one
    datacenter: those stored before the rule."""
    from kubernetes import client

    from webhook.adapters.store.kube import KubeStore
    from webhook.core.decide import PreparedCache, validate_object
    from webhook.core.options import Options

    store = KubeStore(client.ApiClient(client.Configuration()))
    for s in stored:
        store.seeds.handlers[0](None, s)
    answer = validate_object(obj, old, store, {}, Options.default(), PreparedCache())
    assert answer.allowed is not errors
    if errors:
        assert answer.message.count("[seed.datacenter-unique]") == len(errors)
        assert all(e in answer.message for e in errors)
        assert answer.rules == ["seed.datacenter-unique"]
    assert answer.warnings == warnings
    assert answer.warning_rules == ["seed.datacenter-unique"] * len(warnings)


ALLOW_LUA = {"audit-webhook.kubermatic.k8c.io/allowed-fluent-bit-plugins": "lua",
             "audit-webhook.kubermatic.k8c.io/allowed-fluent-bit-keys": "lua:code"}
LUA_SIDECAR = {"enabled": True, "sidecar": {"config": {"filters": [
    {"Name": "lua", "Match": "*", "call": "f", "code": "function f(tag, ts, r) return 0, ts, r end"}]}}}


def _seed_with(annotations, *dcs):
    obj = seed({dc: {} for dc in dcs})
    obj["metadata"]["annotations"] = annotations
    return obj


def _lua_clusters(count, dc="dc1", prefix="lua"):
    return [cluster(name=f"{prefix}{i:02}", dc=dc, audit=LUA_SIDECAR) for i in range(count)]


# case, stored Clusters, old Seed, new Seed, the warnings the Seed UPDATE gets
REVOKED_ALLOWANCES = [
    ("revoked", [*_lua_clusters(2), cluster(name="plain", audit={"enabled": True})],
     _seed_with(ALLOW_LUA, "dc1"), _seed_with({}, "dc1"),
     ['metadata.annotations: 2 Cluster(s) will have their apiserver Pods refused until they drop what this Seed no '
      'longer allows: "lua00", "lua01" [sidecar.key-denied]',
      'metadata.annotations: 2 Cluster(s) will have their apiserver Pods refused until they drop what this Seed no '
      'longer allows: "lua00", "lua01" [sidecar.plugin-denied]']),
    ("bounded-list", _lua_clusters(12), _seed_with(ALLOW_LUA, "dc1"),
     _seed_with({"audit-webhook.kubermatic.k8c.io/allowed-fluent-bit-keys": "lua:code"}, "dc1"),  # plugins revoked
     ['metadata.annotations: 12 Cluster(s) will have their apiserver Pods refused until they drop what this Seed no '
      'longer allows: "lua00", "lua01", "lua02", "lua03", "lua04", "lua05", "lua06", "lua07", "lua08", "lua09" and 2 '
      "more [sidecar.plugin-denied]"]),
    ("datacenter-dropped", _lua_clusters(1, dc="dc2"), _seed_with(ALLOW_LUA, "dc1", "dc2"),
     _seed_with(ALLOW_LUA, "dc1"),
     ['metadata.annotations: 1 Cluster(s) will have their apiserver Pods refused until they drop what this Seed no '
      'longer allows: "lua00" [sidecar.key-denied]',
      'metadata.annotations: 1 Cluster(s) will have their apiserver Pods refused until they drop what this Seed no '
      'longer allows: "lua00" [sidecar.plugin-denied]']),
    ("other-datacenter", _lua_clusters(1, dc="elsewhere"), _seed_with(ALLOW_LUA, "dc1"), _seed_with({}, "dc1"), []),
    ("refused-before", _lua_clusters(1), _seed_with({}, "dc1"), _seed_with({}, "dc1"), []),
    ("still-allowed", _lua_clusters(1), _seed_with(ALLOW_LUA, "dc1"), _seed_with(ALLOW_LUA, "dc1", "dc3"), []),
]


@pytest.mark.parametrize(("stored", "old", "new", "warnings"), [c[1:] for c in REVOKED_ALLOWANCES],
                         ids=[c[0] for c in REVOKED_ALLOWANCES])
def test_a_seed_update_that_stops_injection_names_the_clusters(stored, old, new, warnings):
    """Render-safety rules that read the Seed (a plugin that runs code) are not ratcheted for stored
    Clusters: the Seed update that revokes an allowance is admitted, and says whose apiservers stop."""
    from kubernetes import client

    from webhook.adapters.store.kube import KubeStore
    from webhook.core.decide import PreparedCache, mutate_pod, validate_object
    from webhook.core.options import Options
    from webhook.core.review import AdmissionRequest

    store = KubeStore(client.ApiClient(client.Configuration()))
    for c in stored:
        store.clusters.handlers[0](None, c)
    store.seeds.handlers[0](None, new)
    answer = validate_object(new, old, store, {}, Options.default(), PreparedCache())
    assert answer.allowed
    assert answer.warnings == warnings
    # And so it is: the apiserver Pods of the Clusters counted are refused from now on, naming the rule.
    refused = []
    for c in stored:
        pod = AdmissionRequest.model_validate({"uid": "u", "kind": {"kind": "Pod", "version": "v1"},
                                               "operation": "CREATE", "namespace": f"cluster-{c['metadata']['name']}",
                                               "object": kkp_pod()})
        answer = mutate_pod(pod, store, Options.default(), PreparedCache())
        if not answer.allowed:
            assert "sidecar.plugin-denied" in answer.rules and "[sidecar.plugin-denied]" in answer.message
            refused.append(c["metadata"]["name"])
    counted = {int(w.split(": ")[1].split(" ")[0]) for w in warnings}
    assert counted <= {len(refused)}
