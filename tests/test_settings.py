"""The effective settings of a cluster, case by case."""

import pytest

from tests.helpers import cluster, seed, webhook_backend
from webhook.core.names import OPT_OUT_ANNOTATION
from webhook.core.settings import Origin, effective_settings
from webhook.core.validation.context import Context

SEED_DEFAULTS = {"enabled": False, "policyPreset": "recommended",
                 "sidecar": {"config": {"outputs": [{"Name": "forward", "Match": "*", "Host": "central"}]}}}
DC_WEBHOOK = {"auditWebhookConfig": {"name": "dc-secret", "namespace": "kubermatic"},
              "auditWebhookInitialBackoff": "15s"}
OPT_OUT = {OPT_OUT_ANNOTATION: "true"}

CASES = [
    # id, cluster, seed, expected (enabled, preset, webhook secret, webhook ns, backoff, audit origin)
    ("absent-is-off", cluster(), None, (False, "", None, None, None, Origin.CLUSTER)),
    ("cluster-on", cluster(audit={"enabled": True, "policyPreset": "minimal"}), None,
     (True, "minimal", None, None, None, Origin.CLUSTER)),
    ("webhook-only", cluster(audit={"webhookBackend": webhook_backend()}), None,
     (False, "", "wh", "cluster-abc", "10s", Origin.CLUSTER)),
    ("webhook-custom-backoff", cluster(audit={"enabled": True, "webhookBackend": webhook_backend(backoff="3s")}),
     None, (True, "", "wh", "cluster-abc", "3s", Origin.CLUSTER)),
    ("dc-not-enforcing", cluster(audit={"enabled": False}), seed({"dc1": {"enforceAuditLogging": False}}),
     (False, "", None, None, None, Origin.CLUSTER)),
    ("dc-enforces-without-seed-defaults", cluster(audit={"enabled": False, "policyPreset": "minimal"}),
     seed({"dc1": {"enforceAuditLogging": True}}), (True, "minimal", None, None, None, Origin.DATACENTER)),
    ("dc-enforces-seed-defaults-replace-cluster", cluster(audit={"enabled": False, "policyPreset": "minimal"}),
     seed({"dc1": {"enforceAuditLogging": True}}, audit=SEED_DEFAULTS),
     (True, "recommended", None, None, None, Origin.SEED)),
    ("other-dc-enforces", cluster(), seed({"dc1": {}, "dc2": {"enforceAuditLogging": True}}, audit=SEED_DEFAULTS),
     (False, "", None, None, None, Origin.CLUSTER)),
    ("opt-out", cluster(annotations=OPT_OUT), seed({"dc1": {"enforceAuditLogging": True}}, audit=SEED_DEFAULTS),
     (False, "", None, None, None, Origin.OPT_OUT)),
    ("opt-out-needs-true", cluster(annotations={OPT_OUT_ANNOTATION: "yes"}),
     seed({"dc1": {"enforceAuditLogging": True}}), (True, "", None, None, None, Origin.DATACENTER)),
    ("dc-webhook-replaces-cluster-webhook", cluster(audit={"webhookBackend": webhook_backend()}),
     seed({"dc1": {"enforcedAuditWebhookSettings": DC_WEBHOOK}}),
     (False, "", "dc-secret", "kubermatic", "15s", Origin.CLUSTER)),
    ("dc-webhook-opt-out", cluster(audit={"webhookBackend": webhook_backend()}, annotations=OPT_OUT),
     seed({"dc1": {"enforcedAuditWebhookSettings": DC_WEBHOOK}}),
     (False, "", "wh", "cluster-abc", "10s", Origin.CLUSTER)),
    ("dc-webhook-plus-enforcement", cluster(),
     seed({"dc1": {"enforceAuditLogging": True, "enforcedAuditWebhookSettings": DC_WEBHOOK}}, audit=SEED_DEFAULTS),
     (True, "recommended", "dc-secret", "kubermatic", "15s", Origin.SEED)),
    ("seed-default-webhook-lives-in-seed-namespace", cluster(),
     seed({"dc1": {"enforceAuditLogging": True}}, audit={"webhookBackend": webhook_backend("seed-wh")}),
     (True, "", "seed-wh", "kubermatic", "10s", Origin.SEED)),
]


@pytest.mark.parametrize(("cluster_obj", "seed_obj", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_effective_settings(cluster_obj, seed_obj, expected):
    s = effective_settings(cluster_obj, seed_obj)
    enabled, preset, secret, secret_ns, backoff, origin = expected
    assert s.enabled is enabled
    assert s.preset == preset
    assert s.audit_origin == origin
    if secret is None:
        assert s.webhook is None
    else:
        assert (s.webhook.secret_name, s.webhook.secret_namespace, s.webhook.initial_backoff) == (
            secret, secret_ns, backoff)
    assert s.needs_injection is (enabled or secret is not None)


def test_namespace_comes_from_status_when_set():
    obj = cluster(name="xyz")
    assert effective_settings(obj, None).namespace == "cluster-xyz"
    obj["status"] = {"namespaceName": "custom-ns"}
    assert effective_settings(obj, None).namespace == "custom-ns"


def test_seed_defaults_sidecar_replaces_the_clusters():
    obj = cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [{"name": "A", "value": "1"}]}})
    s = effective_settings(obj, seed({"dc1": {"enforceAuditLogging": True}}, audit=SEED_DEFAULTS))
    assert s.sidecar.extraEnvs == []
    assert s.sidecar.config.outputs == [{"Name": "forward", "Match": "*", "Host": "central"}]


def test_null_fields_mean_absent_as_validation_says():
    """Found by the fuzz suite: `extraEnvs: null` passed validation but broke the model."""
    from webhook.core.validation.admission import check_admission

    obj = cluster(audit={"enabled": True, "sidecar": {"extraEnvs": None, "resources": None,
                                                      "config": {"service": None, "filters": None, "outputs": None}},
                         "webhookBackend": None, "policyPreset": None})
    assert check_admission(obj, None, Context(secrets={})).errors == []
    s = effective_settings(obj, None)
    assert s.enabled and s.sidecar.extraEnvs == [] and s.sidecar.config.outputs == [] and s.webhook is None
