"""The egress NetworkPolicy for the audit sinks: which destinations, and how each is expressed."""

from __future__ import annotations

import pytest

from tests.helpers import cluster, webhook_backend
from webhook.core.egress import Destination, classify, destinations, is_outside, network_policy, refusal
from webhook.core.operator_config import OperatorConfig
from webhook.core.settings import effective_settings
from webhook.core.validation.context import Context

# The operator allows the private network and the two sink namespaces of these tables.
ALLOW = OperatorConfig.model_validate({"egress": {"cidrs": ["10.0.0.0/8", "fd00::/8"],
                                                  "namespaces": ["logging", "audit"]}})


@pytest.mark.parametrize(("host", "kind", "namespace", "service"), [
    ("10.1.2.3", "ip", "", ""),
    ("fd00::7", "ip", "", ""),
    ("fluentd", "service", "cluster-abc", "fluentd"),
    ("fluentd.logging.svc", "service", "logging", "fluentd"),
    ("fluentd.logging.svc.cluster.local", "service", "logging", "fluentd"),
    ("fluentd.logging", "external", "", ""),  # could be a public domain: not guessed
    ("logs.example.com", "external", "", ""),
])
def test_classify(host, kind, namespace, service):
    c = classify(Destination(host, 1, "x"), "cluster-abc")
    assert (c.kind, c.namespace, c.service) == (kind, namespace, service)
    assert is_outside(host) is (kind == "external")


SETTINGS = effective_settings(cluster(audit={
    "enabled": True, "webhookBackend": webhook_backend(),
    "sidecar": {"config": {"outputs": [{"Name": "forward", "Match": "*", "Host": "10.0.0.7", "Port": "24224"},
                                       {"Name": "http", "Match": "*", "host": "collector.logging.svc", "port": "8080"},
                                       {"Name": "es", "Match": "*", "Host": "es.example.com"},
                                       {"Name": "stdout", "Match": "*"}]}}}), None)


def test_destinations_come_from_the_webhook_server_and_output_hosts():
    got = destinations(SETTINGS, "https://sink.audit.svc:8443")
    assert got == [Destination("sink.audit.svc", 8443, "webhook backend"),
                   Destination("10.0.0.7", 24224, "sidecar output 0"),
                   Destination("collector.logging.svc", 8080, "sidecar output 1"),
                   Destination("es.example.com", None, "sidecar output 2")]
    assert destinations(SETTINGS, "http://172.31.43.54")[0] == Destination("172.31.43.54", 80, "webhook backend")


def test_the_policy_allows_exactly_the_expressible_destinations():
    targets = [classify(d, SETTINGS.namespace) for d in destinations(SETTINGS, "https://sink.audit.svc:8443")]
    policy = network_policy(SETTINGS, targets, {("audit", "sink"): {"selector": {"app": "sink"}, "ports": {8443: 9443}},
                                                ("logging", "collector"): None}, ALLOW)
    assert policy["metadata"]["name"] == "audit-logging-egress"
    assert policy["metadata"]["namespace"] == "cluster-abc"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "apiserver"}}
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"] == [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "audit"}},
                 "podSelector": {"matchLabels": {"app": "sink"}}}], "ports": [{"protocol": "TCP", "port": 9443}]},
        {"to": [{"ipBlock": {"cidr": "10.0.0.7/32"}}], "ports": [{"protocol": "TCP", "port": 24224}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "logging"}}}],
         "ports": [{"protocol": "TCP", "port": 8080}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]


def test_nothing_to_allow_means_no_policy():
    plain = effective_settings(cluster(audit={"enabled": True}), None)
    assert network_policy(plain, [classify(d, plain.namespace) for d in destinations(plain, None)], {}) is None
    outside = [classify(Destination("logs.example.com", 443, "x"), "ns")]
    assert network_policy(plain, outside, {}) is None


def test_outside_names_warn_at_admission():
    from webhook.core.validation.admission import check_admission

    found = check_admission(cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [
        {"Name": "es", "Match": "*", "Host": "es.example.com"}]}}}), None, Context(secrets={}))
    assert found.warnings == ["spec.auditLogging.sidecar.config.outputs[0][Host]: an outside name: allow egress to it "
                              "yourself"]


@pytest.mark.parametrize(("host", "port", "why"), [
    ("x.cluster-victim01.svc", "24224", 'namespace "cluster-victim01" belongs to a control plane or to the seed'),
    ("x.kube-system.svc", "53", 'namespace "kube-system" belongs'),
    ("x.kubermatic.svc.cluster.local", "443", 'namespace "kubermatic" belongs'),
    ("x.audit-webhook.svc", "443", 'namespace "audit-webhook" belongs'),
    ("collector.logging.svc", None, "collector.logging.svc has no Port: every port would be open"),
    ("169.254.169.254", "80", "169.254.169.254 is a link-local, loopback or metadata address"),
    ("fd00:ec2::254", "80", "metadata address"),
])
def test_egress_never_opens_other_control_planes_the_seed_or_metadata(host, port, why):
    obj = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [
        {"Name": "http", "Match": "*", "Host": host, **({"Port": port} if port else {})}]}}})
    settings = effective_settings(obj, None)
    targets = [classify(d, settings.namespace) for d in destinations(settings, None)]
    assert network_policy(settings, targets, {}, ALLOW) is None  # nothing opened, even with an allow-list
    from webhook.core.validation.admission import check_admission

    found = check_admission(obj, None, Context(secrets={}, config=ALLOW))
    assert found.errors == []
    assert any(why in w and "egress not opened" in w for w in found.warnings), found.warnings


def test_only_what_the_operator_allows_is_opened_and_never_the_control_planes_own_namespace():
    """The cluster's own namespace holds its etcd: a sink there is refused like any control plane's."""
    obj = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [
        {"Name": "http", "Match": "*", "Host": "sink", "Port": "8080"},
        {"Name": "http", "Match": "*", "Host": "collector.logging.svc", "Port": "8080"},
        {"Name": "http", "Match": "*", "Host": "other.elsewhere.svc", "Port": "8080"},
        {"Name": "forward", "Match": "*", "Host": "192.168.1.9", "Port": "24224"}]}}})
    settings = effective_settings(obj, None)
    targets = [classify(d, settings.namespace) for d in destinations(settings, None)]
    policy = network_policy(settings, targets, {}, ALLOW)
    peers = [r["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
             for r in policy["spec"]["egress"] if "namespaceSelector" in r["to"][0]]
    assert peers == ["logging", "kube-system"]  # the last is DNS
    assert [refusal(t, ALLOW) for t in targets] == [
        'namespace "cluster-abc" belongs to a control plane or to the seed', "",
        "Service elsewhere/other is not in the operator's egress allow-list (egress.namespaces, egress.services)",
        "192.168.1.9 is not in the operator's egress allow-list (egress.cidrs)"]
    one_service = OperatorConfig.model_validate({"egress": {"services": ["elsewhere/other"]}})
    assert [bool(refusal(t, one_service)) for t in targets] == [True, True, False, True]
    # Without an allow-list nothing is opened at all.
    assert network_policy(settings, targets, {}) is None


@pytest.mark.parametrize(("config", "error"), [
    ({"egress": {"namespaces": ["kube-system"]}}, 'namespace "kube-system" belongs to the seed'),
    ({"egress": {"services": ["cluster-x1/etcd"]}}, 'namespace "cluster-x1" belongs'),
    ({"egress": {"cidrs": ["10.0.0.1/8"]}}, "has host bits set"),
    ({"egress": {"cidr": ["10.0.0.0/8"]}}, "Extra inputs are not permitted"),
    ({"egress": {"namespaces": ["Not A Namespace"]}}, "String should match pattern"),
])
def test_an_allow_list_that_names_what_can_never_be_opened_is_refused(config, error):
    import yaml

    from webhook.core.operator_config import ConfigError, parse

    with pytest.raises(ConfigError, match=error):
        parse(yaml.safe_dump(config), "config.yaml")


def test_the_config_file_is_reloaded_and_a_broken_version_keeps_the_last_good_one(tmp_path, caplog):
    from webhook.adapters.config_file import ConfigFile

    path = tmp_path / "config.yaml"
    path.write_text("egress:\n  namespaces: [logging]\n")
    file = ConfigFile(path)
    assert file.current.egress.namespaces == ("logging",)
    assert file.poll() is False  # unchanged
    path.write_text("egress:\n  namespaces: [logging, audit]\n")
    assert file.poll() is True and file.current.egress.namespaces == ("logging", "audit")
    path.write_text("egress:\n  namespaces: [kube-system]\n")
    assert file.poll() is False and file.current.egress.namespaces == ("logging", "audit")
    assert file.poll() is False
    assert len([r for r in caplog.records if "keeping the previous configuration" in r.message]) == 1


def test_the_shipped_configuration_parses_and_opens_nothing():
    import yaml

    from tests.helpers import ROOT
    from webhook.core.operator_config import DEFAULT, parse

    shipped = yaml.safe_load((ROOT / "deploy/overlays/kkp/config.yaml").read_text())
    assert parse(shipped["data"]["config.yaml"], "deploy/overlays/kkp/config.yaml") == DEFAULT


@pytest.mark.parametrize("host", ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
                                  "::169.254.169.254", "::ffff:127.0.0.1", "fe80::1", "169.254.170.2"])
def test_metadata_and_link_local_in_any_ipv6_spelling_are_never_opened(host):
    wide_open = OperatorConfig.model_validate({"egress": {"cidrs": ["0.0.0.0/0", "::/0"]}})
    why = refusal(classify(Destination(host, 80, "x"), "cluster-abc"), wide_open)
    assert why == f"{host} is a link-local, loopback or metadata address"


def test_addresses_in_the_seeds_own_networks_are_other_control_planes_and_never_opened():
    from webhook.core.operator_config import ConfigError, parse

    config = OperatorConfig.model_validate({"seedNetworks": ["10.244.0.0/16", "10.96.0.0/12"],
                                            "egress": {"cidrs": ["192.168.0.0/16"]}})
    assert "seed's Pod or Service network" in refusal(classify(Destination("10.244.3.17", 2379, "x"), "ns"), config)
    assert refusal(classify(Destination("192.168.1.9", 24224, "x"), "ns"), config) == ""
    with pytest.raises(ConfigError, match=r"overlaps the seed network 10\.244\.0\.0/16"):
        parse("seedNetworks: [10.244.0.0/16]\negress:\n  cidrs: [10.0.0.0/8]\n", "config.yaml")


def test_a_webhook_backend_url_with_an_impossible_port_opens_nothing_and_breaks_nothing():
    settings = effective_settings(cluster(audit={"webhookBackend": webhook_backend()}), None)
    assert destinations(settings, "https://sink.audit.svc:65536/x") == []


@pytest.mark.parametrize("host", ["64:ff9b::10.244.1.5", "64:ff9b:1::a9fe:a9fe", "64:ff9b:1:a9fe:a9:fe00::",
                                  "::ffff:0:169.254.169.254", "::ffff:10.244.1.5", "2002:0a0a:0a0a::1"])
def test_ipv6_forms_of_ipv4_addresses_are_never_opened(host):
    """Whatever IPv4 address they stand for, the seed's networks and metadata included."""
    config = OperatorConfig.model_validate({"seedNetworks": ["10.244.0.0/16"], "egress": {"cidrs": ["::/0"]}})
    assert "IPv6 form of an IPv4 address" in refusal(classify(Destination(host, 80, "x"), "ns"), config) or \
        "link-local" in refusal(classify(Destination(host, 80, "x"), "ns"), config)
    assert refusal(classify(Destination("fd00:20::7", 80, "x"), "ns"), config) == ""
