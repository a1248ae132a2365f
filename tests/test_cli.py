"""The offline commands: render, files, check, certs."""

from __future__ import annotations

import argparse
import base64
import json
import platform
import subprocess
import sys

import pytest
import yaml

import webhook
from tests.helpers import EXAMPLES, ROOT, kkp_pod
from webhook.cli import main
from webhook.presets import policy_text


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_python_m_webhook_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "webhook", "--help"], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    for command in ("serve", "render", "files", "check", "certs"):
        assert command in result.stdout


def test_render_prints_the_admitted_pod(capsys):
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"),
                         str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 0, err
    pod = yaml.safe_load(out)
    original = kkp_pod()
    assert [c["name"] for c in pod["spec"]["containers"]] == [
        *(c["name"] for c in original["spec"]["containers"]), "audit-logs"]
    assert pod["spec"]["containers"][3]["env"][0] == {"name": "CLUSTER_ID", "value": "auditon01"}
    assert pod["spec"]["initContainers"] == original["spec"]["initContainers"]


def test_render_with_seed_applies_datacenter_enforcement(capsys):
    code, out, _ = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/enforced.yaml"), "--seed",
                       str(EXAMPLES / "seeds/kubermatic.yaml"), str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 0
    assert "audit-logs" in [c["name"] for c in yaml.safe_load(out)["spec"]["containers"]]
    # Without the Seed, "nothing to inject" would be a guess: an error that says what is missing.
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/enforced.yaml"),
                         str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 2 and out == ""
    assert 'datacenter "frankfurt-enforced" may enforce them: give its Seed with --seed' in err
    code, out, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/enforced.yaml"))
    assert code == 2 and out == "" and "give its Seed with --seed" in err
    # A Seed that does not define the datacenter is an error too, not a warning.
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/enforced.yaml"), "--seed",
                         str(EXAMPLES / "seeds/edge.yaml"), str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 2 and out == "" and 'defines datacenter "frankfurt-enforced"' in err


def test_render_refuses_an_invalid_cluster(capsys):
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "rejected/cluster-bad.yaml"),
                         str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 1
    assert out == ""
    assert 'spec.auditLogging.policyPreset: Unsupported value: "verbose"' in err


def test_files_prints_the_configmap_and_secret(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("egress:\n  namespaces: [audit-forward]\n")
    code, out, _ = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--config", str(config))
    assert code == 0
    doc = yaml.safe_load(out)
    assert doc["kind"] == "List"
    configmap, secret, egress = doc["items"]
    assert egress["kind"] == "NetworkPolicy"
    assert egress["spec"]["egress"][0] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "audit-forward"}}}],
        "ports": [{"protocol": "TCP", "port": 24224}]}
    assert (configmap["kind"], configmap["metadata"]["name"], configmap["metadata"]["namespace"]) == (
        "ConfigMap", "audit-config", "cluster-auditon01")
    assert configmap["data"]["policy.yaml"] == policy_text("minimal")
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "audit-logs-fluentbit")
    conf = secret["stringData"]["fluent-bit.conf"]
    assert "    Host fluentd.audit-forward.svc.cluster.local\n" in conf
    assert "    Record team ${TEAM}\n" in conf


def test_files_for_webhook_only_is_just_the_policy(capsys):
    code, out, _ = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/webhook-only.yaml"))
    assert code == 0
    assert [i["kind"] for i in yaml.safe_load(out)["items"]] == ["ConfigMap"]


def test_files_in_yaml_format(capsys):
    code, out, _ = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-off.yaml"), "--seed",
                       str(EXAMPLES / "seeds/kubermatic.yaml"))
    assert yaml.safe_load(out)["items"] == []
    code, out, _ = run(capsys, "files", "--fluent-bit-format", "yaml", "--no-cluster-id-record", "--cluster",
                       str(EXAMPLES / "clusters/enforced.yaml"), "--seed", str(EXAMPLES / "seeds/kubermatic.yaml"))
    assert code == 0
    secret = yaml.safe_load(out)["items"][1]
    conf = yaml.safe_load(secret["stringData"]["fluent-bit.yaml"])
    assert [f["name"] for f in conf["pipeline"].get("filters", [])] == []
    assert conf["pipeline"]["outputs"][0]["name"] == "forward"


def test_check_accepts_good_manifests(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "clusters"), str(EXAMPLES / "seeds"))
    assert code == 0
    assert out.count(": ok") == 10
    assert "Warning: spec.auditLogging.webhookBackend.auditWebhookConfig" in out


def test_check_rejects_with_the_webhook_messages_and_exit_1(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "rejected/cluster-bad.yaml"))
    assert code == 1
    assert 'rejected: Cluster.kubermatic.k8c.io "rejected01" is invalid: [' in out


def test_check_finds_secrets_in_source(capsys, tmp_path):
    cluster_file = tmp_path / "c.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "both01"},
        "spec": {"cloud": {"dc": "hamburg"}, "auditLogging": {"webhookBackend": {
            "auditWebhookConfig": {"name": "audit-webhook-backend"}}}}}))
    code, out, err = run(capsys, "check", str(cluster_file), "--source", str(EXAMPLES / "seeds"))
    assert code == 0 and "cluster-both01/audit-webhook-backend does not exist yet" in out + err
    # Without its datacenter's Seed, "ok" would be a guess.
    code, out, _ = run(capsys, "check", str(cluster_file))
    assert code == 1 and 'rejected: datacenter "hamburg" is defined by no Seed given' in out
    code, out, _ = run(capsys, "check", str(cluster_file), "--source", str(EXAMPLES), "-o", "json")
    result = json.loads(out)[0]
    assert code == 0 and {k: v for k, v in result.items() if k != "warnings"} == {
        "file": str(cluster_file), "kind": "Cluster.kubermatic.k8c.io", "name": "both01", "allowed": True,
        "message": ""}
    code, out, err = run(capsys, "check", str(cluster_file), "--source", str(EXAMPLES))
    assert code == 0 and "does not exist yet" not in out + err, out


@pytest.mark.parametrize("content", ["kind: [", "apiVersion: v1\nkind: Pod\n"])
def test_check_without_checkable_objects_is_a_usage_error(capsys, tmp_path, content):
    f = tmp_path / "x.yaml"
    f.write_text(content)
    code, _, err = run(capsys, "check", str(f))
    assert code == 2
    assert str(f) in err or "no Cluster, Seed or ConfigMap" in err


def test_check_a_configmap(capsys, tmp_path):
    f = tmp_path / "cm.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config"},
                                 "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- {}\n"}}))
    code, out, _ = run(capsys, "check", str(f))
    assert code == 1
    assert "data[policy.yaml].rules[0].level: Required value" in out


def test_certs_prints_the_ca_bundle_and_renews(capsys, tmp_path):
    code, out, err = run(capsys, "certs", "--cert-dir", str(tmp_path), "--service", "hook", "--namespace", "ops")
    assert code == 0 and "wrote" in err
    assert base64.b64decode(out.strip()) == (tmp_path / "ca.crt").read_bytes()
    first = (tmp_path / "tls.crt").read_bytes()
    code, out2, err = run(capsys, "certs", "--cert-dir", str(tmp_path), "--service", "hook", "--namespace", "ops")
    assert out2 == out
    assert "kept" in err and (tmp_path / "tls.crt").read_bytes() == first
    code, out3, err = run(capsys, "certs", "--cert-dir", str(tmp_path), "--service", "hook", "--namespace", "ops",
                          "--renew")
    assert (tmp_path / "tls.crt").read_bytes() != first
    assert out3 == out  # same CA, same bundle
    # A new Service name needs a new certificate.
    code, _, err = run(capsys, "certs", "--cert-dir", str(tmp_path), "--service", "other", "--namespace", "ops")
    assert "wrote" in err



def test_files_says_which_egress_it_does_not_open(capsys):
    """Without the operator's allow-list nothing is opened, and `files` says so instead of staying silent."""
    code, out, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"))
    assert code == 0
    assert [i["kind"] for i in yaml.safe_load(out)["items"]] == ["ConfigMap", "Secret"]
    assert ("note: egress to sidecar output 0 not opened: Service audit-forward/fluentd is not in the operator's "
            "egress allow-list (egress.namespaces, egress.services)") in err


def test_a_broken_config_file_is_a_clear_error(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("egress:\n  cidrs: [10.0.0.1/8]\n  namespaces: [kube-system]\n")
    code, out, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--config", str(config))
    assert code == 2 and out == ""
    assert f"{config}: egress.cidrs: 10.0.0.1/8 has host bits set" in err
    config.write_text("egress:\n  namespaces: [kube-system]\n")
    code, _, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--config", str(config))
    assert code == 2 and 'namespace "kube-system" belongs to the seed or to a control plane' in err


def test_every_flag_of_every_command_says_what_it_does():
    from webhook.cli import parser

    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in [("", top), *commands.items()] for action in sub._actions
               if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_global_flags_work_after_the_command_too(capsys):
    code, out, _ = run(capsys, "explain", "--preset", "minimal", "--verb", "get", "--resource", "pods",
                       "--log-level", "DEBUG")
    assert code == 0 and out.startswith("level: ")


def test_stdin_is_read_with_a_dash(capsys, monkeypatch):
    import io

    from webhook.store import files

    files._stdin_text.cache_clear()
    monkeypatch.setattr("sys.stdin", io.StringIO((EXAMPLES / "clusters/audit-on.yaml").read_text()))
    try:
        code, out, _ = run(capsys, "files", "--cluster", "-", "-o", "json")
    finally:
        files._stdin_text.cache_clear()
    assert code == 0 and json.loads(out)["kind"] == "List"


def test_version_agrees_with_build_info(capsys):
    from webhook.metrics import Metrics

    assert run(capsys, "version")[:2] == (0, f"audit-webhook {webhook.__version__}\n")
    text = Metrics().render().decode()
    assert ('audit_webhook_build_info{component="webhook",'
            f'python_version="{platform.python_version()}",version="{webhook.__version__}"}} 1.0') in text
    assert "process_resident_memory_bytes" in text


def test_with_json_logs_a_usage_error_is_a_json_line_too(capsys, tmp_path):
    assert main(["--log-format", "json", "report", "--source", str(tmp_path / "missing")]) == 2
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert line["level"] == "error" and str(tmp_path / "missing") in line["msg"]


def test_with_json_logs_uncaught_exceptions_and_warnings_are_json_lines():
    script = ("import threading, warnings\n"
              "from webhook import logs\n"
              "logs.configure('INFO', 'json')\n"
              "warnings.warn('old')\n"
              "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
              "raise RuntimeError('boom')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = [json.loads(text) for text in result.stderr.splitlines()]  # every line is one JSON object
    assert [(line["level"], line["msg"]) for line in lines][1:] == [
        ("critical", "uncaught ZeroDivisionError in thread worker"), ("critical", "uncaught RuntimeError")]
    assert lines[0]["logger"] == "py.warnings" and "old" in lines[0]["msg"]
    assert "Traceback" in lines[2]["error"] and "boom" in lines[2]["error"]
