"""The sidecar threat model as a table: each hostile setting a Cluster owner may write, and the
field error that refuses it; then what a Seed's operator may allow, and what stays refused."""

from __future__ import annotations

import pytest

from tests.helpers import cluster, seed
from webhook.core import names
from webhook.core.validation.admission import check_admission
from webhook.core.validation.context import Context
from webhook.core.validation.fluentbit_policy import is_loopback, protected_path_in, seed_allowances

SC = "spec.auditLogging.sidecar"
CFG = f"{SC}.config"
UNSAFE = ("must not contain line breaks, tabs or other control characters (U+0000-U+001F, U+007F-U+009F, U+2028, "
          "U+2029, U+FEFF): a parser on the way would start a new line there")


def sidecar(config=None, envs=None, resources=None, **kw):
    side = {}
    if config is not None:
        side["config"] = config
    if envs is not None:
        side["extraEnvs"] = [{"name": n, "value": v} for n, v in envs.items()]
    if resources is not None:
        side["resources"] = resources
    return cluster(audit={"enabled": True, "sidecar": side}, **kw)


def out(**entries):
    return {"outputs": [{"Name": "forward", "Match": "*", "Host": "fluentd.example.com", **entries}]}


def errors(obj, seed_obj=None):
    return [str(e) for e in check_admission(obj, None, Context(seed=seed_obj, secrets={})).errors]


# (id, cluster, the one error expected, or a fragment of it when the text is long)
REFUSED = [
    # One character policy: every code point some layer reads as a line break.
    ("nel-value", sidecar(out(Host="fluentd\x85@INCLUDE /etc/passwd")),
     f'{CFG}.outputs[0][Host]: Invalid value: "fluentd\x85@INCLUDE /etc/passwd": {UNSAFE}'),
    ("line-separator", sidecar(out(Host="a\u2028[OUTPUT]")), "[Host]: Invalid value"),
    ("paragraph-separator", sidecar({"service": {"Flush": "1\u2029@SET CLUSTER_ID=other"}}), "[Flush]: Invalid value"),
    ("vertical-tab", sidecar(out(Tag="a\x0bb")), "[Tag]: Invalid value"),
    ("form-feed", sidecar(out(Tag="a\x0cb")), "[Tag]: Invalid value"),
    ("c1-control", sidecar(out(Tag="a\x9bb")), "[Tag]: Invalid value"),
    ("bom", sidecar(out(Tag="\ufeffa")), "[Tag]: Invalid value"),
    ("lone-surrogate", sidecar(out(Tag="a\ud800")), "[Tag]: Invalid value"),
    ("nel-in-env", sidecar(envs={"TEAM": "x\x85@SET CLUSTER_ID=other-tenant"}),
     f'{SC}.extraEnvs[0].value: Invalid value: "x\x85@SET CLUSTER_ID=other-tenant": {UNSAFE}'),
    # Code execution, borrowed tokens.
    ("lua-inline", sidecar({"filters": [{"Name": "lua", "Match": "*", "code": "os.execute('id')", "call": "f"}]}),
     f'{CFG}.filters[0][Name]: Forbidden: "lua" runs Lua code inside the apiserver Pod; an operator may allow it '
     f"for a Seed with the annotation {names.ALLOWED_PLUGINS_ANNOTATION}"),
    ("wasm", sidecar({"filters": [{"Name": "wasm", "Match": "*", "Function_Name": "f"}]}), '"wasm" runs WebAssembly'),
    ("kubernetes-filter", sidecar({"filters": [{"Name": "kubernetes", "Match": "*", "Kube_URL": "https://evil"}]}),
     '"kubernetes" reads the Pod\'s service-account token'),
    ("exec-output", sidecar({"outputs": [{"Name": "exec", "Match": "*", "Command": "sh"}]}), '"exec" runs a command'),
    # Files, listeners, loops.
    ("file-output-on-log", sidecar({"outputs": [{"Name": "file", "Match": "*", "Path": "/var/log/kubernetes/audit"}]}),
     "must not name /var/log/kubernetes/audit"),
    ("file-output", sidecar({"outputs": [{"Name": "file", "Match": "*"}]}), '"file" writes files'),
    ("log-file", sidecar({"service": {"Log_File": "/var/log/kubernetes/audit/audit.log"}}),
     "must not name /var/log/kubernetes/audit"),
    ("http-server", sidecar({"service": {"HTTP_Server": "On"}}), "[HTTP_Server]: Forbidden: not a [SERVICE] key"),
    ("http-port", sidecar({"service": {"HTTP_Port": "6443"}}), "[HTTP_Port]: Forbidden: not a [SERVICE] key"),
    ("parsers-file", sidecar({"service": {"Parsers_File": "/etc/passwd"}}), "[Parsers_File]: Forbidden"),
    ("plugins-file", sidecar({"service": {"Plugins_File": "/tmp/x.so"}}), "[Plugins_File]: Forbidden"),
    ("streams-file", sidecar({"service": {"Streams_File": "/tmp/s"}}), "[Streams_File]: Forbidden"),
    ("hot-reload", sidecar({"service": {"Hot_Reload": "On"}}), "[Hot_Reload]: Forbidden"),
    ("exit-output", sidecar({"outputs": [{"Name": "exit", "Match": "*"}]}), '"exit" stops fluent-bit'),
    ("expect-exit", sidecar({"filters": [{"Name": "expect", "Match": "*", "action": "exit", "key_exists": "a"}]}),
     '"exit" stops fluent-bit'),
    ("storage-path-outside", sidecar({"service": {"storage.path": "/tmp/buf"}}),
     "must be a folder inside /var/log/kubernetes/audit/"),
    ("storage-path-on-db", sidecar({"service": {"storage.path": "/var/log/kubernetes/audit/fluentbit.db"}}),
     "must be a folder inside"),
    ("dotdot-path", sidecar(out(Tag="x", **{"tls.ca_file": "/tmp/../etc/kubernetes/audit/policy.yaml"})),
     "must not name /etc/kubernetes/audit"),
    ("s3-store-dir", sidecar({"outputs": [{"Name": "s3", "Match": "*", "bucket": "b", "store_dir": "/tmp"}]}),
     "[store_dir]: Forbidden: names a folder of the sidecar to write to"),
    ("kafka-plugin-library", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k:9092",
                                                   "rdkafka.plugin.library.paths": "/tmp/x.so"}]}), "loads code"),
    ("kafka-kinit", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k:9092",
                                          "rdkafka.sasl.kerberos.kinit.cmd": "sh -c id"}]}), "runs a command"),
    ("role-arn", sidecar({"outputs": [{"Name": "s3", "Match": "*", "bucket": "b", "role_arn": "arn:x"}]}),
     "borrows the node's cloud credentials"),
    ("loopback-host", sidecar(out(Host="127.0.0.1", Port="6443")), "must not be the apiserver Pod itself"),
    ("localhost-host", sidecar(out(Host="localhost")), "must not be the apiserver Pod itself"),
    # Variables: expanded before they are judged.
    ("daemon-via-env", sidecar({"service": {"Daemon": "${D}"}}, envs={"D": "on"}),
     f"{CFG}.service[Daemon]: Forbidden: must not use ${{...}}: the value decides which rules apply, so it must be "
     "written out"),
    ("plugin-via-env", sidecar({"outputs": [{"Name": "${PLUGIN}", "Match": "*"}]}, envs={"PLUGIN": "file"}),
     "[Name]: Forbidden: must not use ${...}"),
    ("host-via-env", sidecar(out(Host="${H}"), envs={"H": "evil.example.com"}), "[Host]: Forbidden: must not use"),
    ("unknown-var", sidecar(out(Tag="${NOPE}")),
     f'{CFG}.outputs[0][Tag]: Invalid value: "${{NOPE}}": ${{NOPE}} is not set in the sidecar; it has '
     "${CLUSTER_ID}, ${HOSTNAME} (add variables with extraEnvs)"),
    ("path-via-env", sidecar(out(Tag="x", Retry_Limit="${P}"), envs={"P": "/var/log/kubernetes/audit/audit.log"}),
     "must not name /var/log/kubernetes/audit"),
    ("env-refers-to-env", sidecar(envs={"A": "$(CLUSTER_ID)"}), "must not refer to other variables"),
    ("plugin-with-space", sidecar({"outputs": [{"Name": "stdout x", "Match": "*"}]}),
     f'{CFG}.outputs[0][Name]: Unsupported value: "stdout x": supported values: '),
    ("plugin-case", sidecar({"outputs": [{"Name": "File", "Match": "*"}]}), 'Unsupported value: "File"'),
    # Found by a red-team review: a second spelling of a key, cloud identities, librdkafka, the env.
    ("second-spelling", sidecar(out(HOST="127.0.0.1")),
     f'{CFG}.outputs[0][HOST]: Duplicate value: "HOST": fluent-bit keys are case-insensitive and the last one wins; '
     "set each key once"),
    ("second-spelling-action", sidecar({"filters": [{"Name": "expect", "Match": "*", "key_exists": "x",
                                                     "action": "warn", "ACTION": "exit"}]}), "Duplicate value"),
    ("second-storage-path", sidecar({"service": {"storage.path": "/var/log/kubernetes/audit/b",
                                                 "Storage.Path": "/etc/fluent-bit"}}), "Duplicate value"),
    ("multi-value-checked", sidecar({"filters": [{"Name": "grep", "Match": "*", "Regex": "a b",
                                                  "regex": "log /var/run/secrets/x"}]}), "must not name /var/run/secrets"),
    ("flush-a-day", sidecar({"service": {"Flush": "86400"}}),
     f'{CFG}.service[Flush]: Invalid value: "86400": must be a number from 0.1 to 10'),
    ("flush-zero", sidecar({"service": {"Flush": "0"}}), "must be a number from 0.1 to 10"),
    ("coro-stack", sidecar({"service": {"coro_stack_size": "1"}}), "not a [SERVICE] key a cluster may set"),
    ("log-level", sidecar({"service": {"Log_Level": "bogus"}}), "must be one of off, error, warn"),
    ("stackdriver-token", sidecar({"outputs": [{"Name": "stackdriver", "Match": "*", "resource": "global",
                                                "cloud_logging_base_url": "https://attacker.example"}]}),
     "sends the node's cloud token elsewhere"),
    ("azure-identity", sidecar({"outputs": [{"Name": "azure_kusto", "Match": "*", "auth_type": "managed_identity",
                                             "ingestion_endpoint": "https://attacker.example"}]}),
     "borrows the node's cloud identity"),
    ("aws-auth", sidecar({"outputs": [{"Name": "es", "Match": "*", "Host": "es.example.com", "AWS_Auth": "On"}]}),
     "signs with the node's cloud credentials"),
    ("kafka-gssapi", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k.example.com:9092",
                                           "rdkafka.sasl.mechanisms": "GSSAPI"}]}), "run kinit"),
    ("kafka-principal", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k.example.com:9092",
                                              "rdkafka.sasl.kerberos.principal": "a; id #"}]}),
     "is not one of the rdkafka.* settings a cluster may set"),
    ("kafka-providers", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k.example.com:9092",
                                              "rdkafka.ssl.providers": "/tmp/x.so"}]}), "rdkafka.* settings"),
    ("oracle-config", sidecar({"outputs": [{"Name": "oracle_log_analytics", "Match": "*",
                                            "config_file_location": "/etc/passwd"}]}), "names a file"),
    ("ld-preload", sidecar(envs={"LD_PRELOAD": "/tmp/x.so"}),
     f"{SC}.extraEnvs[0].name: Forbidden: LD_PRELOAD is read by the dynamic loader, TLS libraries, proxies or cloud "
     "SDKs in the sidecar"),
    ("proxy-env", sidecar(envs={"https_proxy": "http://127.0.0.1:6443"}), "read by the dynamic loader"),
    ("metadata-env", sidecar(envs={"METADATA_SERVER": "attacker.example"}), "read by the dynamic loader"),
    ("env-path", sidecar(envs={"DIR": "/var/log/kubernetes/audit/x"}),
     f"{SC}.extraEnvs[0].value: Forbidden: must not name /var/log/kubernetes/audit"),
    ("no-host", sidecar({"outputs": [{"Name": "http", "Match": "*", "Port": "6443", "tls": "On"}]}),
     f"{CFG}.outputs[0][Host]: Required value: without it http sends to 127.0.0.1, the apiserver Pod itself"),
    ("ip6-loopback", sidecar(out(Host="ip6-loopback")), "must not be the apiserver Pod itself"),
    ("inet-aton-short", sidecar(out(Host="127.1")), "must not be the apiserver Pod itself"),
    ("inet-aton-number", sidecar(out(Host="2130706433")), "must not be the apiserver Pod itself"),
    ("proxy-loopback", sidecar({"outputs": [{"Name": "http", "Match": "*", "Host": "logs.example.com",
                                             "proxy": "http://127.0.0.1:6443"}]}), "[proxy]: Forbidden: must not be"),
    ("brokers-loopback", sidecar({"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k.example.com:9092,127.0.0.1:6443"}]}),
     "[Brokers]: Forbidden: must not be the apiserver Pod itself"),
    ("parser-filter", sidecar({"filters": [{"Name": "parser", "Match": "*", "Key_Name": "log", "Parser": "json"}]}),
     "needs a parsers file"),
    ("tiny-memory", sidecar(resources={"limits": {"memory": "1Mi"}}),
     f'{SC}.resources.limits[memory]: Invalid value: "1Mi": must be at least 32Mi'),
    ("request-above-default-limit", sidecar(resources={"requests": {"memory": "100Mi"}}),
     f'{SC}.resources.requests[memory]: Invalid value: "100Mi": must be less than or equal to memory limit of 60Mi'),
    # Resources.
    ("bogus-resource", sidecar(resources={"limits": {"bogus": "1"}}),
     f'{SC}.resources.limits[bogus]: Unsupported value: "bogus": supported values: "cpu", "memory", '
     '"ephemeral-storage"'),
    ("hugepages", sidecar(resources={"limits": {"hugepages-2Mi": "2Mi"}}), "Unsupported value: \"hugepages-2Mi\""),
    ("gpu", sidecar(resources={"limits": {"nvidia.com/gpu": "1"}}), "Unsupported value"),
    ("huge-cpu", sidecar(resources={"limits": {"cpu": "64"}}),
     f'{SC}.resources.limits[cpu]: Invalid value: "64": must be at most 1, the ceiling the operator sets for audit '
     "sidecars"),
    ("huge-memory", sidecar(resources={"requests": {"memory": "256Gi"}}), "must be at most 1Gi"),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_hostile_sidecar_settings_are_refused(obj, expected):
    found = errors(obj)
    assert found, "accepted"
    assert any(e == expected or expected in e for e in found), found


ENFORCING = seed({"dc1": {"enforceAuditLogging": True}})


@pytest.mark.parametrize("config", [
    {"outputs": [{"Name": "null", "Match": "*"}]},
    {"outputs": [{"Name": "counter", "Match": "*"}]},
    {"filters": [{"Name": "grep", "Match": "*", "Exclude": "kind .*"}]},
    {"filters": [{"Name": "throttle", "Match": "*", "Rate": "1"}]},
    {"filters": [{"Name": "modify", "Match": "*", "Remove": "user"}]},
    {"filters": [{"Name": "rewrite_tag", "Match": "*", "Rule": "$kind .* other false"}]},
])
def test_an_enforced_datacenter_keeps_every_record(config):
    obj = sidecar(config)
    assert errors(obj) == []  # the cluster's own business where nothing is enforced
    found = errors(obj, ENFORCING)
    assert len(found) == 1 and "this datacenter enforces audit logging: the cluster may add outputs, not lose " \
                                "records" in found[0], found
    relaxed = seed({"dc1": {"enforceAuditLogging": True}})
    relaxed["metadata"]["annotations"] = {names.ALLOW_RECORD_CHANGES_ANNOTATION: "true"}
    assert errors(obj, relaxed) == []


def test_an_enforced_datacenter_still_accepts_added_outputs_and_opt_outs():
    obj = sidecar({"filters": [{"Name": "stdout", "Match": "*"}],
                   "outputs": [{"Name": "http", "Match": "*", "Host": "logs.example.com", "Port": "443"}]})
    assert errors(obj, ENFORCING) == []
    dropping = sidecar({"outputs": [{"Name": "null", "Match": "*"}]},
                       annotations={names.OPT_OUT_ANNOTATION: "true"})
    assert errors(dropping, ENFORCING) == []


ACCEPTED = [
    ("forward", out(Host="fluentd.logging.svc", Port="24224")),
    ("env-expanded", {"outputs": [{"Name": "http", "Match": "*", "Host": "logs.example.com",
                                   "Header": "X-Team ${TEAM}", "http_User": "${CLUSTER_ID}"}]}),
    ("storage-in-audit-volume", {"service": {"storage.path": "/var/log/kubernetes/audit/buffer", "Flush": "1"}}),
    ("grep-include", {"filters": [{"Name": "grep", "Match": "*", "Regex": "verb create"}]}),
    ("unicode-text", out(Tag="prüfung-日本")),
    ("hostname-var", {"filters": [{"Name": "record_modifier", "Match": "*", "Record": "hostname ${HOSTNAME}"}]}),
    ("reads-cluster-id", {"filters": [{"Name": "grep", "Match": "*", "Regex": "cluster_id ^prod-"}]}),
    ("system-trust-store", out(tls="On", **{"tls.ca_file": "/etc/ssl/certs/ca-certificates.crt"})),
    ("multi-value-keys", {"filters": [{"Name": "modify", "Match": "*", "Add": "a 1", "add": "b 2"}]}),
    ("kafka-sasl", {"outputs": [{"Name": "kafka", "Match": "*", "Brokers": "k.example.com:9092",
                                 "rdkafka.sasl.mechanisms": "SCRAM-SHA-512", "rdkafka.sasl.username": "u"}]}),
]


@pytest.mark.parametrize("config", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_ordinary_settings_are_accepted(config):
    assert errors(sidecar(config, envs={"TEAM": "payments"},
                          resources={"requests": {"cpu": "50m"}, "limits": {"cpu": "1", "memory": "1Gi"}})) == []


def _allowing(**annotations):
    s = seed({"dc1": {}})
    s["metadata"]["annotations"] = annotations
    return s


def test_a_seed_allows_plugins_and_keys_but_never_the_protected_ones():
    lua = sidecar({"filters": [{"Name": "lua", "Match": "*", "script": "/scripts/a.lua", "call": "f"}]})
    assert len(errors(lua)) == 2
    assert len(errors(lua, _allowing(**{names.ALLOWED_PLUGINS_ANNOTATION: "lua"}))) == 1  # the script key
    both = _allowing(**{names.ALLOWED_PLUGINS_ANNOTATION: "lua", names.ALLOWED_KEYS_ANNOTATION: "lua:script"})
    assert errors(lua, both) == []
    # Allowing `file` never lets it write over the audit log.
    on_log = sidecar({"outputs": [{"Name": "file", "Match": "*", "Path": "/var/log/kubernetes/audit/"}]})
    everything = _allowing(**{names.ALLOWED_PLUGINS_ANNOTATION: "file", names.ALLOWED_KEYS_ANNOTATION: "*:path"})
    assert [e for e in errors(on_log, everything)] == [
        f"{CFG}.outputs[0][Path]: Forbidden: must not name /var/log/kubernetes/audit: the sidecar may not read, "
        "write or serve the audit log, the audit policy, its own configuration or service-account tokens"]
    listen = sidecar({"service": {"HTTP_Server": "On", "HTTP_Port": "6443"}})
    assert errors(listen, _allowing(**{names.ALLOWED_KEYS_ANNOTATION: "service:http_server service:http_port"})) == [
        f"{CFG}.service[HTTP_Port]: Forbidden: port 6443 is kube-apiserver's in this Pod"]


def test_a_seed_raises_the_resource_ceiling():
    big = sidecar(resources={"limits": {"cpu": "2", "memory": "2Gi"}})
    assert len(errors(big)) == 2
    assert errors(big, _allowing(**{names.RESOURCE_CEILING_ANNOTATION: "cpu=2,memory=4Gi"})) == []


def test_seed_annotations_are_validated_on_the_seed():
    bad = _allowing(**{names.ALLOWED_KEYS_ANNOTATION: "nocolon", names.RESOURCE_CEILING_ANNOTATION: "gpu=1",
                       names.ALLOW_RECORD_CHANGES_ANNOTATION: "yes"})
    found = errors(bad)
    assert len(found) == 3, found
    assert found[0] == (f'metadata.annotations[{names.ALLOWED_KEYS_ANNOTATION}]: Invalid value: "nocolon": each entry '
                        'must be "<plugin>:<key>", "service:<key>" or "*:<key>"')
    allowances, errs = seed_allowances(_allowing(**{names.ALLOWED_KEYS_ANNOTATION: "kafka:rdkafka.plugin.library.paths",
                                                    names.ALLOWED_PLUGINS_ANNOTATION: "lua, wasm"}))
    assert errs == [] and allowances.allows_plugin("wasm") and allowances.allows_key("kafka", "rdkafka.plugin.library.paths")


@pytest.mark.parametrize(("value", "protected"), [
    ("/var/log/kubernetes/audit/audit.log", "/var/log/kubernetes/audit"),
    ("//var//log/kubernetes/./audit", "/var/log/kubernetes/audit"),
    ("x=/etc/kubernetes/audit/webhook/webhook.yaml", "/etc/kubernetes/audit"),
    ("/etc/fluent-bit/fluent-bit.conf", "/etc/fluent-bit"),
    ("/var/log/kubernetes/auditx", ""),
    ("https://logs.example.com/api/v1", ""),
])
def test_protected_paths(value, protected):
    assert protected_path_in(value) == protected


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("0.0.0.0", True),
    ("::ffff:127.0.0.1", True), ("LOCALHOST", True), ("a.localhost", True), ("10.0.0.1", False),
    ("logs.example.com", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"), ("0", "0.0.0.0"), ("1.16777215", "1.255.255.255"), ("1.2.65535", "1.2.255.255"),
    ("0xffffffff", "255.255.255.255"), ("127.0.0.1 junk", "127.0.0.1"),
    ("08.1", None), ("1.2.3.4.5", None), ("256.1", None), ("1.16777216", None), ("1.2.65536", None), ("0x", None),
    ("1..2", None), ("", None), ("4294967296", None), ("1.2.3.256", None), ("abc", None), ("-1", None), ("+1", None),
])
def test_inet_aton_reads_what_the_c_library_reads(text, address):
    import ipaddress

    from webhook.core.validation.fluentbit_policy import inet_aton

    packed = inet_aton(text)
    assert (str(ipaddress.ip_address(packed)) if packed is not None else None) == address
