"""The offline commands: render, files, check, certs."""

from __future__ import annotations

import argparse
import base64
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import webhook
from tests.helpers import EXAMPLES, ROOT, kkp_pod
from webhook.adapters.cli import main
from webhook.core.presets import policy_text

SEED = str(EXAMPLES / "seeds/kubermatic.yaml")


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
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--seed", SEED,
                         str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 0, err
    pod = yaml.safe_load(out)
    original = kkp_pod()
    assert [c["name"] for c in pod["spec"]["containers"]] == [
        *(c["name"] for c in original["spec"]["containers"]), "audit-logs"]
    assert pod["spec"]["containers"][3]["env"][0] == {"name": "CLUSTER_ID", "value": "auditon01"}
    assert pod["spec"]["initContainers"] == original["spec"]["initContainers"]


def test_render_with_seed_applies_datacenter_enforcement(capsys):
    code, out, _ = run(capsys, "render", "--cluster", str(EXAMPLES / "clusters/enforced.yaml"), "--seed", SEED,
                       str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 0
    assert "audit-logs" in [c["name"] for c in yaml.safe_load(out)["spec"]["containers"]]


ENFORCED, EDGE, POD = (str(EXAMPLES / p) for p in ("clusters/enforced.yaml", "seeds/edge.yaml", "pods/apiserver.yaml"))
NEEDS_SEED = ('Cluster "enforced01" is in datacenter "frankfurt-enforced", whose Seed can enforce audit logging or '
              'replace its settings: give the Seed that defines "frankfurt-enforced" with --seed')
NO_SUCH_DC = 'no Seed defines datacenter "frankfurt-enforced"'
CHECK_NEEDS_SEED = ('cannot judge: datacenter "frankfurt-enforced" (of Cluster "enforced01") needs its Seed, whose '
                    "enforcement can change the outcome: pass the Seeds with --source or among the files")


@pytest.mark.parametrize(("argv", "message"), [
    (["render", "--cluster", ENFORCED, POD], NEEDS_SEED),
    (["files", "--cluster", ENFORCED], NEEDS_SEED),
    # Audit logging on by its own settings: the Seed may still replace them (the red team's c-enf-on.yaml).
    (["render", "--cluster", "{on_in_enforced}", POD], 'datacenter "frankfurt-enforced", whose Seed can enforce'),
    (["files", "--cluster", "{on_in_enforced}"], 'datacenter "frankfurt-enforced", whose Seed can enforce'),
    (["render", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), POD],
     'give the Seed that defines "hamburg" with --seed'),
    (["render", "--cluster", ENFORCED, "--seed", EDGE, POD], NO_SUCH_DC),
    (["files", "--cluster", ENFORCED, "--seed", EDGE], NO_SUCH_DC),
    (["check", ENFORCED], CHECK_NEEDS_SEED),
    (["check", ENFORCED, "--source", EDGE], NO_SUCH_DC),
    (["check", ENFORCED, EDGE], NO_SUCH_DC),
])
def test_without_the_seed_of_the_datacenter_there_is_no_answer(capsys, tmp_path, argv, message):
    on_in_enforced = tmp_path / "c-enf-on.yaml"
    on_in_enforced.write_text(yaml.safe_dump({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "enfon01"},
        "spec": {"cloud": {"dc": "frankfurt-enforced"}, "auditLogging": {"enabled": True, "policyPreset": "minimal"}}}))
    code, out, err = run(capsys, *(a.format(on_in_enforced=on_in_enforced) for a in argv))
    assert code == 2, out + err
    assert message in out + err
    if argv[0] != "check":
        assert out == ""


def test_a_cluster_without_a_datacenter_needs_no_seed(capsys, tmp_path):
    cluster = tmp_path / "c.yaml"
    cluster.write_text(yaml.safe_dump({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
                                       "metadata": {"name": "nodc01"}, "spec": {"auditLogging": {"enabled": True}}}))
    code, out, err = run(capsys, "render", "--cluster", str(cluster), POD)
    assert code == 0, err
    assert "audit-logs" in [c["name"] for c in yaml.safe_load(out)["spec"]["containers"]]


@pytest.mark.parametrize(("cluster", "pod", "note"), [
    ("clusters/audit-on.yaml", "{plain}", "the Pod is not a KKP kube-apiserver Pod (no apiserver container)"),
    ("clusters/audit-on.yaml", "{injected}", "the Pod already runs with the audit sidecar, volumes and flags"),
    ("clusters/audit-off.yaml", "pods/apiserver.yaml", "the cluster has audit logging and the webhook backend off"),
])
def test_render_says_why_there_is_nothing_to_inject(capsys, tmp_path, cluster, pod, note):
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "x", "namespace": "cluster-auditon01", "labels": {"app": "etcd"}},
        "spec": {"containers": [{"name": "etcd", "image": "etcd"}]}}))
    code, out, _ = run(capsys, "render", "--cluster", str(EXAMPLES / cluster), "--seed", SEED, POD)
    injected = tmp_path / "injected.yaml"
    injected.write_text(out)
    pod_file = pod.format(plain=plain, injected=injected)
    pod_path = pod_file if pod_file.startswith(str(tmp_path)) else str(EXAMPLES / pod_file)
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / cluster), "--seed", SEED, pod_path)
    assert code == 0
    assert yaml.safe_load(out) == yaml.safe_load(Path(pod_path).read_text())
    assert f"note: nothing to inject: {note}" in err
    assert "own settings" not in err


def test_render_refuses_an_invalid_cluster(capsys):
    code, out, err = run(capsys, "render", "--cluster", str(EXAMPLES / "rejected/cluster-bad.yaml"), "--seed", SEED,
                         str(EXAMPLES / "pods/apiserver.yaml"))
    assert code == 1
    assert out == ""
    assert 'spec.auditLogging.policyPreset: Unsupported value: "verbose"' in err


def test_files_prints_the_configmap_and_secret(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("egress:\n  namespaces: [audit-forward]\n")
    code, out, _ = run(capsys, "files", "--mode", "standalone", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"),
                       "--seed", SEED, "--config", str(config))
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
    conf = base64.b64decode(secret["data"]["fluent-bit.conf"]).decode()
    assert "    Host fluentd.audit-forward.svc.cluster.local\n" in conf
    assert "    Record team ${TEAM}\n" in conf


def test_files_for_webhook_only_is_just_the_policy(capsys):
    code, out, _ = run(capsys, "files", "--mode", "standalone", "--cluster", str(EXAMPLES / "clusters/webhook-only.yaml"),
                       "--seed", SEED)
    assert code == 0
    assert [i["kind"] for i in yaml.safe_load(out)["items"]] == ["ConfigMap"]
    # On a KKP seed (the default, as `reconcile`'s) KKP keeps audit-config: nothing of ours.
    code, out, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/webhook-only.yaml"), "--seed", SEED)
    assert code == 0 and yaml.safe_load(out)["items"] == [] and "in kkp mode" in err


def test_files_in_yaml_format(capsys):
    code, out, _ = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-off.yaml"), "--seed",
                       str(EXAMPLES / "seeds/kubermatic.yaml"))
    assert yaml.safe_load(out)["items"] == []
    code, out, _ = run(capsys, "files", "--mode", "standalone", "--fluent-bit-format", "yaml", "--no-cluster-id-record",
                       "--cluster",
                       str(EXAMPLES / "clusters/enforced.yaml"), "--seed", str(EXAMPLES / "seeds/kubermatic.yaml"))
    assert code == 0
    secret = yaml.safe_load(out)["items"][1]
    conf = yaml.safe_load(base64.b64decode(secret["data"]["fluent-bit.yaml"]))
    assert [f["name"] for f in conf["pipeline"].get("filters", [])] == []
    assert conf["pipeline"]["outputs"][0]["name"] == "forward"


def test_check_accepts_good_manifests(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "clusters"), str(EXAMPLES / "seeds"))
    assert code == 0
    assert out.count(": ok") == 10
    assert "Warning: spec.auditLogging.webhookBackend.auditWebhookConfig" in out


def test_check_rejects_with_the_webhook_messages_and_exit_1(capsys):
    code, out, _ = run(capsys, "check", str(EXAMPLES / "rejected/cluster-bad.yaml"), "--source", SEED)
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
    assert code == 2 and 'cannot judge: datacenter "hamburg" (of Cluster "both01") needs its Seed' in out
    code, out, _ = run(capsys, "check", str(cluster_file), "--source", str(EXAMPLES), "-o", "json")
    result = json.loads(out)[0]
    assert code == 0 and {k: v for k, v in result.items() if k != "warnings"} == {
        "file": str(cluster_file), "kind": "Cluster.kubermatic.k8c.io", "name": "both01", "operation": "UPDATE",
        "allowed": True, "message": "", "rules": [], "warning_rules": []}
    code, out, err = run(capsys, "check", str(cluster_file), "--source", str(EXAMPLES))
    assert code == 0 and "does not exist yet" not in out + err, out


WEAK_POLICY = {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"}
BROKEN_POLICY = {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- {}\n"}
PRESET_OWNED = 'cluster "auditon01" uses the audit policy preset "minimal"'


@pytest.mark.parametrize(("name", "namespace", "data", "source", "code", "verdict"), [
    # The red team's cm-weak.yaml: /validate refuses it, so must check.
    ("audit-config", "cluster-auditon01", WEAK_POLICY, "", 1, PRESET_OWNED),
    # cm-weak-nons.yaml: whose preset binds it is unknown.
    ("audit-config", "", WEAK_POLICY, "", 2, "cannot judge: it has no metadata.namespace, so the Cluster owning it"),
    ("audit-config", "cluster-auditon01", WEAK_POLICY, "seeds", 2,
     'cannot judge: no Cluster among the files owns namespace "cluster-auditon01" (its preset may own this '
     "policy): pass the Cluster with --source"),
    # cm-enf.yaml with only the Cluster: its Seed's enforcement decides the preset.
    ("audit-config", "cluster-enforced01", WEAK_POLICY, "clusters/enforced.yaml", 2,
     'cannot judge: datacenter "frankfurt-enforced" (of Cluster "enforced01", which owns namespace '
     '"cluster-enforced01") needs its Seed'),
    ("audit-config", "cluster-enforced01", WEAK_POLICY, "clusters/enforced.yaml,seeds/edge.yaml", 2,
     'cannot judge: no Seed defines datacenter "frankfurt-enforced"'),
    # A policy kube-apiserver would refuse is refused whoever owns it: that answer needs no owner.
    ("audit-config", "", BROKEN_POLICY, "", 1, "data[policy.yaml].rules[0].level: Required value"),
    # Other ConfigMaps have no rules.
    ("other", "", WEAK_POLICY, "", 0, "ok"),
])
def test_check_judges_an_audit_config_only_with_its_owner(capsys, tmp_path, name, namespace, data, source, code,
                                                          verdict):
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    target = tmp_path / "cm.yaml"
    target.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}))
    sources = [a for s in source.split(",") if s for a in ("--source", str(EXAMPLES / s))] or ["--source",
                                                                                              str(EXAMPLES)]
    got, out, err = run(capsys, "check", str(target), *sources)
    assert got == code, out + err
    assert verdict in out


@pytest.mark.parametrize(("copy", "source", "operation"), [
    (True, "", "UPDATE"),  # examples/ holds auditon01: `kubectl apply` would update it
    (True, "seeds", "CREATE"),
    (False, "", "CREATE"),  # the checked file itself, found again under --source, is no stored version
])
def test_check_judges_an_update_of_what_source_holds(capsys, tmp_path, copy, source, operation):
    target = EXAMPLES / "clusters/audit-on.yaml"
    if copy:
        target = tmp_path / "audit-on.yaml"
        target.write_text((EXAMPLES / "clusters/audit-on.yaml").read_text())
    code, out, _ = run(capsys, "check", str(target), "--source", str(EXAMPLES / source))
    assert code == 0
    assert out.endswith(f"Cluster.kubermatic.k8c.io auditon01 ({operation}): ok\n")


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_check_output_names_the_rules(capsys, tmp_path, output):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "c1"},
                                 "spec": {"cloud": {"dc": "hamburg"}, "auditLogging": {
                                     "enabled": "yes", "policyPreset": "loud", "colour": "red"}}}))
    code, out, _ = run(capsys, "check", str(f), "--source", str(EXAMPLES / "seeds"), "-o", output)
    (result,) = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert code == 1
    assert result["rules"] == ["audit.enabled-bool", "audit.preset-supported"]
    assert result["message"].count(" [audit.") == 2
    assert result["warning_rules"] == [] and result["warnings"]  # "unknown field" is advice, with no rule


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
    code, out, err = run(capsys, "files", "--mode", "standalone", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"),
                         "--seed", SEED)
    assert code == 0
    assert [i["kind"] for i in yaml.safe_load(out)["items"]] == ["ConfigMap", "Secret"]
    assert ("note: egress to sidecar output 0 not opened: Service audit-forward/fluentd is not in the operator's "
            "egress allow-list (egress.namespaces, egress.services)") in err


def test_a_broken_config_file_is_a_clear_error(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("egress:\n  cidrs: [10.0.0.1/8]\n  namespaces: [kube-system]\n")
    code, out, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--seed", SEED, "--config", str(config))
    assert code == 2 and out == ""
    assert f"{config}: egress.cidrs: 10.0.0.1/8 has host bits set" in err
    config.write_text("egress:\n  namespaces: [kube-system]\n")
    code, _, err = run(capsys, "files", "--cluster", str(EXAMPLES / "clusters/audit-on.yaml"), "--seed", SEED, "--config", str(config))
    assert code == 2 and 'namespace "kube-system" belongs to the seed or to a control plane' in err


def test_every_flag_of_every_command_says_what_it_does():
    from webhook.adapters.cli import parser

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

    from webhook.adapters.store import files

    files.stdin_text.cache_clear()
    monkeypatch.setattr("sys.stdin", io.StringIO((EXAMPLES / "clusters/audit-on.yaml").read_text()))
    try:
        code, out, _ = run(capsys, "files", "--cluster", "-", "--seed", SEED, "-o", "json")
    finally:
        files.stdin_text.cache_clear()
    assert code == 0 and json.loads(out)["kind"] == "List"


def test_version_agrees_with_build_info(capsys, monkeypatch):
    from webhook.adapters.metrics import Metrics

    monkeypatch.setenv("AUDIT_WEBHOOK_REVISION", "3f9c2e1")
    code, out, _ = run(capsys, "version", "-o", "json")
    assert code == 0
    info = json.loads(out)
    assert info == {"version": webhook.__version__, "revision": "3f9c2e1", "python_version": platform.python_version()}
    assert run(capsys, "version")[:2] == (
        0, f"audit-webhook {webhook.__version__} (revision 3f9c2e1, Python {platform.python_version()})\n")
    text = Metrics().render().decode()
    labels = ",".join(f'{k}="{v}"' for k, v in sorted({**info, "component": "webhook"}.items()))
    assert f"audit_webhook_build_info{{{labels}}} 1.0" in text
    assert "process_resident_memory_bytes" in text


def test_the_readme_try_it_commands_work(capsys, monkeypatch):
    """Every offline command of the README's "Try it" block answers (the check of a rejected Cluster with 1)."""
    import shlex

    block = (ROOT / "README.md").read_text().split("## Try it", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line)[1:] for line in block.replace("\\\n", " ").splitlines()
                if line.startswith(".venv/bin/audit-webhook ")]
    assert len(commands) >= 5
    monkeypatch.chdir(ROOT)
    for argv in commands:
        code, out, err = run(capsys, *argv)
        assert (code, bool(out)) == (1 if "rejected" in " ".join(argv) else 0, True), (argv, err)


AUDIT_ON = str(EXAMPLES / "clusters/audit-on.yaml")
SERVE = ["serve", "--source", str(EXAMPLES), "--host", "127.0.0.1", "--port", "0"]


@pytest.mark.parametrize(("argv", "error"), [
    (["check", "{bin}"], "{bin}: cannot read: not UTF-8 text"),
    (["check", AUDIT_ON, "--source", SEED, "--config", "{bin}"], "{bin}: cannot read: not UTF-8 text"),
    (["files", "--cluster", AUDIT_ON, "--seed", SEED, "--config", "{bin}"], "{bin}: cannot read: not UTF-8 text"),
    ([*SERVE, "--cert-dir", "{tmp}/certs", "--config", "{bin}"], "{bin}: cannot read: not UTF-8 text"),
    ([*SERVE, "--reconcile"], "--reconcile needs --source kube (or run `audit-webhook reconcile`)"),
    (["serve", "--port", "99999"], "argument --port: 99999 is not a port (0-65535)"),
    (["serve", "--metrics-port", "99999"], "argument --metrics-port: 99999 is not a port (0-65535)"),
    (["serve", "--host", "not..a.host"], "argument --host: 'not..a.host' is not an address of this machine"),
    ([*SERVE, "--cert-dir", "{bin}"], "--cert-dir {bin}: is a file, not a directory"),
    ([*SERVE, "--cert-dir", "{bin}/certs"], "--cert-dir {bin}/certs: cannot keep the certificates there: Not a directory"),
    ([*SERVE, "--cert-dir", "{tmp}/certs", "--client-ca", "{tmp}/ca.pem"],
     "--client-ca {tmp}/ca.pem: cannot load the CA: No such file or directory"),
    ([*SERVE, "--cert-dir", "{tmp}/certs", "--client-ca", "{bin}"], "--client-ca {bin}: cannot load the CA: "),
    ([*SERVE, "--cert-dir", "{tmp}/certs", "--metrics-port", "{busy}"],
     "--metrics-port: cannot listen on 127.0.0.1:{busy}: Address already in use"),
    ([*SERVE[:-1], "{busy}", "--cert-dir", "{tmp}/certs"], "--port: cannot listen on 127.0.0.1:{busy}: Address already in use"),
    (["check", "{bomb}"], "{bomb}: exceeds the YAML budget: has more than 200000 nodes with its aliases expanded"),
    (["check", "{deep_flow}"], "{deep_flow}: exceeds the YAML budget: nests more than 100 levels deep"),
    (["check", "{deep_block}"], "{deep_block}: exceeds the YAML budget: nests more than 100 levels deep"),
    (["files", "--cluster", AUDIT_ON, "--seed", SEED, "--config", "{bomb}"], "{bomb}: exceeds the YAML budget"),
])
def test_a_users_mistake_is_one_line_naming_the_file_or_flag(capsys, tmp_path, argv, error):
    import socket

    (tmp_path / "bin.yaml").write_bytes(bytes(range(0xab, 0x100)) * 4)
    (tmp_path / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)))
    (tmp_path / "deep_flow.yaml").write_text("[" * 5000)
    (tmp_path / "deep_block.yaml").write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(150)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        names = {n: tmp_path / f"{n}.yaml" for n in ("bin", "bomb", "deep_flow", "deep_block")}
        fill = {**names, "tmp": tmp_path, "busy": busy.getsockname()[1]}
        try:
            code = main([a.format(**fill) for a in argv])
        except SystemExit as exc:  # argparse's own refusal of a flag's value
            code = exc.code
        _, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err
    assert error.format(**fill) in err.splitlines()[-1]


@pytest.mark.parametrize(("argv", "stdin", "expect"), [
    (["report", "--source", "-", "-o", "json"],
     (EXAMPLES / "clusters/audit-on.yaml").read_text() + "---\n" + (EXAMPLES / "seeds/kubermatic.yaml").read_text(),
     lambda out: [r["cluster"] for r in json.loads(out)] == ["auditon01"]),
    (["files", "--mode", "standalone", "--cluster", AUDIT_ON, "--seed", SEED, "--config", "-", "-o", "json"],
     "egress:\n  namespaces: [audit-forward]\n",
     lambda out: [i["kind"] for i in json.loads(out)["items"]] == ["ConfigMap", "Secret", "NetworkPolicy"]),
])
def test_a_dash_reads_standard_input(capsys, monkeypatch, argv, stdin, expect):
    import io

    from webhook.adapters.store import files

    files.stdin_text.cache_clear()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        code, out, err = run(capsys, *argv)
    finally:
        files.stdin_text.cache_clear()
    assert code == 0, err
    assert expect(out)


@pytest.mark.parametrize("argv", [
    ["explain", "--preset", "minimal", "--verb", "get", "--resource", "pods"],
    ["report", "--source", str(EXAMPLES)],
    ["version"],
])
def test_yaml_output_says_what_json_says(capsys, argv):
    code, as_json, _ = run(capsys, *argv, "-o", "json")
    assert code == 0
    code, as_yaml, _ = run(capsys, *argv, "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


@pytest.mark.parametrize("argv", [["--version"], ["explain", "--version"], ["check", "--version"]])
def test_version_flag_before_or_after_the_command(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    from webhook.adapters.build_info import describe

    assert capsys.readouterr().out == describe() + "\n"


DUP_SEED = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed", "metadata": {"name": "dup", "namespace": "kubermatic"},
            "spec": {"datacenters": {"hamburg": {"spec": {"enforceAuditLogging": True}}}}}


@pytest.mark.parametrize(("command", "dup_first"), [
    (["render", "--cluster", str(EXAMPLES / "clusters/audit-off.yaml"), "--seed", "{seeds}",
      str(EXAMPLES / "pods/apiserver.yaml")], True),
    (["render", "--cluster", str(EXAMPLES / "clusters/audit-off.yaml"), "--seed", "{seeds}",
      str(EXAMPLES / "pods/apiserver.yaml")], False),
    (["files", "--cluster", str(EXAMPLES / "clusters/audit-off.yaml"), "--seed", "{seeds}"], False),
    (["check", str(EXAMPLES / "clusters/audit-off.yaml"), "--source", "{seeds}"], True),
    (["report", "--source", "{dir}"], False),
])
def test_two_seeds_of_one_datacenter_are_an_error_whatever_their_order(capsys, tmp_path, command, dup_first):
    """Not the last one read wins: which Seed's enforcement applies must not depend on file order."""
    kubermatic = [d for d in yaml.safe_load_all((EXAMPLES / "seeds/kubermatic.yaml").read_text()) if d]
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(yaml.safe_dump_all([DUP_SEED, *kubermatic] if dup_first else [*kubermatic, DUP_SEED]))
    argv = [a.format(seeds=seeds, dir=tmp_path) for a in command]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert 'datacenter "hamburg" of Seed ' in err and "a datacenter belongs to one Seed" in err
    assert 'Seed "dup"' in err and 'Seed "kubermatic"' in err


def test_one_seed_read_twice_is_no_conflict(capsys):
    code, _, _ = run(capsys, "check", str(EXAMPLES / "seeds/kubermatic.yaml"), "--source", str(EXAMPLES / "seeds"))
    assert code == 0



def test_with_json_logs_a_usage_error_is_a_json_line_too(capsys, tmp_path):
    assert main(["--log-format", "json", "report", "--source", str(tmp_path / "missing")]) == 2
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert line["level"] == "error" and str(tmp_path / "missing") in line["msg"]


@pytest.mark.parametrize(("argv", "said"), [
    (["serve", "--log-format", "json", "--bogus"], "unrecognized arguments: --bogus"),
    (["--log-format", "json", "serve", "--port", "notanint"], "argument --port"),
    (["--log-format=json", "reconcile", "--workers", "many"], "argument --workers"),
    (["serve", "--log-format", "json", "--mode", "both"], "argument --mode"),
])
def test_with_json_logs_an_argument_error_is_one_json_line(capsys, argv, said):
    """argparse stops before `--log-format` is known: a typo in a Deployment's args is still one JSON line."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert line["level"] == "error" and said in line["msg"] and "--help" in line["msg"]


@pytest.mark.parametrize(("argv", "said"), [
    (["reconcile", "--resync-period", "0"], "argument --resync-period: 0 is not a finite number above 0"),
    (["reconcile", "--resync-period", "-5"], "argument --resync-period: -5 is not a finite number above 0"),
    (["reconcile", "--resync-period", "nan"], "argument --resync-period: nan is not a finite number above 0"),
    (["reconcile", "--report-interval", "inf"], "argument --report-interval: inf is not a finite number above 0"),
    (["reconcile", "--api-qps", "0"], "argument --api-qps: 0 is not a finite number above 0"),
    (["reconcile", "--api-qps", "fast"], "argument --api-qps: 'fast' is not a number"),
    (["reconcile", "--workers", "0"], "argument --workers: 0 is below 1"),
    (["reconcile", "--api-burst", "-1"], "argument --api-burst: -1 is below 1"),
    (["reconcile", "--workers", "1.5"], "argument --workers: '1.5' is not a whole number"),
    (["serve", "--max-connections", "0"], "argument --max-connections: 0 is below 1"),
    (["serve", "--idle-timeout", "0"], "argument --idle-timeout: 0 is not a finite number above 0"),
    (["serve", "--reload-interval", "-1"], "argument --reload-interval: -1 is not a finite number above 0"),
])
def test_periods_rates_and_counts_must_be_above_zero(capsys, argv, said):
    """A zero resync period or reload interval would spin, zero workers would reconcile nothing, a
    zero rate would never send: each is refused at start with the flag and what it takes."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err


def test_without_json_logs_an_argument_error_is_argparse_usage(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--log-format", "json", "--log-format", "text", "--bogus"])
    assert capsys.readouterr().err.startswith("usage: audit-webhook")


def test_with_json_logs_uncaught_exceptions_and_warnings_are_json_lines():
    script = ("import threading, warnings\n"
              "from webhook.adapters import logs\n"
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
