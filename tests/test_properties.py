"""Property-based tests (hypothesis): the mutation is idempotent and keeps what it does not own;
accepted sidecar maps never add fluent-bit sections or lines."""

from __future__ import annotations

import copy

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fluentbit import parse_classic
from webhook.core import names
from webhook.core.apiserver_flags import bool_flags
from webhook.core.desired_pod import audit_flags, desired_pod, inject, injection_for, read_flags
from webhook.core.fluentbit import render_classic
from webhook.core.model import SidecarConfig
from webhook.core.options import Options
from webhook.core.settings import effective_settings
from webhook.core.validation.errors import Findings, Path
from webhook.core.validation.fluentbit_policy import denied_key, policy
from webhook.core.validation.sidecar import _PLAIN_VALUE, _check_value, check_sidecar

OPTS = Options.default()
OWNED_VOLUMES = {names.VOLUME_AUDIT_LOG, names.VOLUME_AUDIT_CONFIG, names.VOLUME_FLUENTBIT, names.VOLUME_WEBHOOK_BACKEND}
OUR_FLAGS = ["--audit-log-path", "--audit-log-maxage", "--audit-log-maxbackup", "--audit-log-maxsize",
             "--audit-log-truncate-enabled", "--audit-log-truncate-max-event-size",
             "--audit-policy-file", "--audit-webhook-config-file", "--audit-webhook-initial-backoff"]
OUR_PATHS = [names.AUDIT_CONFIG_DIR, names.AUDIT_LOG_DIR, names.WEBHOOK_CONFIG_DIR]

names_st = st.text("abcdefghij-", min_size=1, max_size=8).filter(lambda n: n[0] != "-")
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6))
unknown = st.dictionaries(st.sampled_from(["x-extra", "zz", "future"]), scalars, max_size=2)
foreign_flag = st.builds(lambda n, v: f"--{n}={v}", names_st, names_st)
# Every spelling kube-apiserver accepts: `=` or two tokens, `-` or `_`.
our_flag = st.sampled_from(OUR_FLAGS).flatmap(
    lambda f: st.sampled_from([f, "--" + f[2:].replace("-", "_")]).flatmap(
        lambda spelled: st.sampled_from([[f"{spelled}=old"], [spelled, "old"]])))
args_st = st.lists(st.one_of(foreign_flag.map(lambda a: [a]), our_flag), max_size=8).map(
    lambda chunks: [t for c in chunks for t in c])
mount_st = st.builds(lambda n, p, ro: {"name": n, "mountPath": p, **({"readOnly": ro} if ro is not None else {})},
                     names_st, st.one_of(st.sampled_from(OUR_PATHS), names_st.map(lambda n: f"/srv/{n}")),
                     st.one_of(st.none(), st.booleans()))
env_st = st.lists(st.builds(lambda n, v: {"name": n, "value": v}, st.sampled_from(["A", "B", "CLUSTER_ID"]), names_st),
                  max_size=3)


@st.composite
def pods(draw):
    n_before = draw(st.integers(0, 3))
    foreign = [{"name": f"c{i}", "image": draw(names_st), **draw(unknown)} for i in range(draw(st.integers(0, 4)))]
    apiserver = {"name": "apiserver", "image": "kube-apiserver", **draw(unknown)}
    if draw(st.integers(0, 4)):  # sometimes absent: the injection creates it
        apiserver["args"] = draw(args_st)
    if draw(st.integers(0, 4)):
        apiserver["volumeMounts"] = draw(st.lists(mount_st, max_size=4, unique_by=lambda m: m["mountPath"]))
    if draw(st.booleans()):
        apiserver["command"] = ["kube-apiserver", *draw(args_st)]
    containers = [*foreign[:n_before], apiserver, *foreign[n_before:]]
    if draw(st.booleans()):
        containers.insert(draw(st.integers(0, len(containers))),
                          {"name": "audit-logs", "image": "old", "env": draw(env_st), "terminationMessagePath": "/x"})
    volume_names = draw(st.lists(st.one_of(st.sampled_from(sorted(OWNED_VOLUMES)), names_st), max_size=6, unique=True))
    volumes = [{"name": n, **draw(st.sampled_from([{"emptyDir": {}}, {"configMap": {"name": "x"}},
                                                   {"secret": {"secretName": "y", "defaultMode": 420}}]))}
               for n in volume_names]
    metadata = {"name": "p", "labels": {"app": "apiserver"}}
    annotations = draw(st.one_of(st.dictionaries(names_st, names_st, max_size=2), st.none(), st.just("absent")))
    if annotations != "absent":
        metadata["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod",
           **({"metadata": metadata} if draw(st.integers(0, 9)) else {}),
           "spec": {"containers": containers, **({"volumes": volumes} if volumes or draw(st.booleans()) else {}),
                    **draw(unknown)},
           **draw(unknown)}
    return pod


@st.composite
def clusters(draw):
    audit = {"enabled": draw(st.booleans())}
    if draw(st.booleans()):
        audit["webhookBackend"] = {"auditWebhookConfig": {"name": "wh"},
                                   "auditWebhookInitialBackoff": draw(st.sampled_from(["", "5s", "1m"]))}
    if draw(st.booleans()):
        audit["sidecar"] = {"extraEnvs": [{"name": n, "value": "v"} for n in draw(
            st.lists(st.sampled_from(["A", "B", "TEAM"]), unique=True, max_size=3))]}
    if not audit["enabled"] and "webhookBackend" not in audit:
        audit["enabled"] = True
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "prop"},
            "spec": {"cloud": {"dc": "dc"}, "auditLogging": audit}}


def foreign_tokens(tokens):
    """Tokens that are not our flags or their values, in order."""
    out, skip = [], False
    for i, t in enumerate(tokens):
        if skip:
            skip = False
            continue
        flag = t.partition("=")[0].replace("_", "-") if t.startswith("--") else t
        if flag in OUR_FLAGS:
            skip = "=" not in t and i + 1 < len(tokens) and flag not in bool_flags()
            continue
        out.append(t)
    return out


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(pod=pods(), cluster=clusters())
def test_mutation_is_idempotent_and_the_patch_applies(pod, cluster):
    s = injection_for(effective_settings(cluster, None), OPTS)
    once, patch = inject(pod, s)
    assert desired_pod(once, s) == once
    assert inject(once, s)[1] == []
    assert jsonpatch.apply_patch(pod, patch) == once
    # Whatever spellings and repeats the Pod had, kube-apiserver reads our values (it takes the last).
    apiserver = next(c for c in once["spec"]["containers"] if c["name"] == "apiserver")
    assert read_flags(apiserver, list(s.flags)) == s.flags


@PROPERTY
@given(pod=pods(), cluster=clusters())
def test_mutation_never_loses_or_reorders_foreign_data(pod, cluster):
    original = copy.deepcopy(pod)
    out = desired_pod(pod, injection_for(effective_settings(cluster, None), OPTS))
    assert pod == original  # the input is never modified in place
    # Everything outside metadata.annotations and spec stays byte for byte.
    assert {k: v for k, v in out.items() if k not in ("metadata", "spec")} == {
        k: v for k, v in original.items() if k not in ("metadata", "spec")}
    metadata = original.get("metadata", {})
    assert {k: v for k, v in out["metadata"].items() if k != "annotations"} == {
        k: v for k, v in metadata.items() if k != "annotations"}
    assert {k: v for k, v in out["metadata"]["annotations"].items() if k != names.SETTINGS_HASH_ANNOTATION} == \
        (metadata.get("annotations") or {})
    assert {k: v for k, v in out["spec"].items() if k not in ("containers", "volumes")} == {
        k: v for k, v in original["spec"].items() if k not in ("containers", "volumes")}
    # Foreign containers: unchanged, same order; ours only appended or updated in place.
    foreign = [c for c in original["spec"]["containers"] if c["name"] not in ("apiserver", "audit-logs")]
    assert [c for c in out["spec"]["containers"] if c["name"] not in ("apiserver", "audit-logs")] == foreign
    before = [c["name"] for c in original["spec"]["containers"]]
    assert [c["name"] for c in out["spec"]["containers"]][: len(before)] == before
    # Foreign volumes: unchanged, same order; no name twice.
    vols = out["spec"]["volumes"]
    assert [v for v in vols if v["name"] not in OWNED_VOLUMES] == [
        v for v in original["spec"].get("volumes", []) if v["name"] not in OWNED_VOLUMES]
    assert len({v["name"] for v in vols}) == len(vols)
    # apiserver: foreign tokens in order, each of our flags given a value, no new mount path twice.
    api_in = next(c for c in original["spec"]["containers"] if c["name"] == "apiserver")
    api_out = next(c for c in out["spec"]["containers"] if c["name"] == "apiserver")
    for field in ("command", "args"):
        assert foreign_tokens(api_out.get(field, [])) == foreign_tokens(api_in.get(field, []))
    all_tokens = api_out.get("command", []) + api_out.get("args", [])
    for flag, value in audit_flags(effective_settings(cluster, None)).items():
        assert any(t == f"{flag}={value}" or (t == flag and all_tokens[i + 1] == value)
                   for i, t in enumerate(all_tokens)), flag
    paths = [m["mountPath"].rstrip("/") for m in api_out["volumeMounts"]]
    assert len(paths) == len(set(paths))
    assert [m for m in api_out["volumeMounts"] if m["mountPath"].rstrip("/") not in OUR_PATHS] == [
        m for m in api_in.get("volumeMounts", []) if m["mountPath"].rstrip("/") not in OUR_PATHS]


# Every character or token some layer on the way may read as a line break, a directive or a variable.
HOSTILE_TOKENS = ["a", "Z", "0", " ", "_", ".", "-", "@", "[", "]", "#", "$", "{", "}", "\t", "\n", "\r", "\x00",
                  "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ufeff", "=", "*", "/",
                  ":", "'", '"', "ü", "${CLUSTER_ID}", "${TEAM}", "${NOPE}", "$(TEAM)", "@INCLUDE ", "@SET "]
hostile = st.lists(st.sampled_from(HOSTILE_TOKENS), max_size=6).map("".join)
safe_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda k: k.lower() not in ("name", "match", "match_regex", "daemon", "path", "file", "code", "script",
                                "database") and not denied_key(k))
def _valid_service_value(rule):
    if rule and "number" in rule:
        return st.sampled_from([str(rule["number"][0]), str(rule["number"][1])])
    if rule and "oneOf" in rule:
        return st.sampled_from([str(w) for w in rule["oneOf"]])
    return st.just("64M")


SERVICE_RULES = {k: v for k, v in policy().service_keys.items() if k != "storage.path"}
service_key = st.sampled_from(sorted(SERVICE_RULES))
# Printable text: brackets, '@', '#' and '${...}' of known variables are fine inside a value, and must stay inside it.
safe_value = st.lists(st.sampled_from([*"aZ09 _.-@[]#{}=*:'\"&<>ü", "${TEAM}", "${CLUSTER_ID}"]),
                      min_size=1, max_size=8).map("".join).filter(lambda v: v.strip() == v and v)


def _entries(keys):
    # Mostly clean, sometimes one hostile entry: both refusals and acceptances need examples.
    return st.tuples(
        st.dictionaries(keys, safe_value, max_size=3),
        st.one_of(st.none(), st.tuples(st.one_of(keys, hostile), st.one_of(safe_value, hostile))),
    ).map(lambda t: {**t[0], **({t[1][0]: t[1][1]} if t[1] else {})})


entries = _entries(safe_key)
# Service keys take values of their own kind: a valid value each, sometimes one hostile entry.
service_entries = st.tuples(
    st.lists(service_key, unique=True, max_size=3).flatmap(
        lambda keys: st.tuples(*(_valid_service_value(SERVICE_RULES[k]) for k in keys)).map(
            lambda values, keys=keys: dict(zip(keys, values, strict=True)))),
    st.one_of(st.none(), st.tuples(st.one_of(service_key, hostile), hostile)),
).map(lambda t: {**t[0], **({t[1][0]: t[1][1]} if t[1] else {})})


def plugin_entries(plugins):
    return st.tuples(st.sampled_from([True] * 5 + [False]), st.sampled_from(plugins), entries).map(
        lambda t: {**({"Name": t[1], "Match": "*"} if t[0] else {}), **t[2]})


def _accepted_rate_is_meaningful(accepted: list[bool]) -> None:
    # The property says nothing if every generated map is refused.
    assert sum(accepted) >= 50, f"only {sum(accepted)} of {len(accepted)} generated configs were accepted"


ACCEPTED: list[bool] = []


@settings(max_examples=500, deadline=None)
@given(service=service_entries, filters=st.lists(plugin_entries(["grep", "record_modifier"]), max_size=3),
       outputs=st.lists(plugin_entries(["stdout", "forward", "http"]), max_size=3),
       team=st.one_of(safe_value, hostile))
def test_accepted_sidecar_maps_render_exactly_the_sections_they_ask_for(service, filters, outputs, team):
    raw = {"extraEnvs": [{"name": "TEAM", "value": team}],
           "config": {"service": service, "filters": filters, "outputs": outputs}}
    ACCEPTED.append(not check_sidecar(raw, Path("sidecar")).errors)
    if not ACCEPTED[-1]:
        return
    config = SidecarConfig(service=service, filters=filters, outputs=outputs)
    text = render_classic(config, OPTS)
    sections = parse_classic(text)
    # fluent-bit expands variables after splitting lines; even expanded first, nothing may change shape.
    expanded = parse_classic(text.replace("${TEAM}", team).replace("${CLUSTER_ID}", "cluster"))
    assert [(h, [k for k, _ in e]) for h, e in expanded] == [(h, [k for k, _ in e]) for h, e in sections]
    head = ["SERVICE"] if service else []
    assert [s[0] for s in sections] == head + ["INPUT", "FILTER"] + ["FILTER"] * len(filters) + \
        ["OUTPUT"] * max(1, len(outputs))
    # Drop our INPUT and our cluster-id FILTER (after the user's): what is left is the user's maps.
    ours = len(head) + 1 + len(filters)
    assert dict(sections[ours][1])["Set"] == "cluster_id ${CLUSTER_ID}"
    user_sections = sections[: len(head)] + sections[len(head) + 1: ours] + sections[ours + 1:]
    user_maps = ([service] if service else []) + filters + (outputs or [{"Name": "stdout", "Match": "*"}])
    for (_, entries), given_map in zip(user_sections, user_maps, strict=True):
        assert entries == [(k, v.strip()) for k, v in given_map.items()]


def test_the_hostile_generator_also_produced_accepted_configs():
    if len(ACCEPTED) < 500:
        test_accepted_sidecar_maps_render_exactly_the_sections_they_ask_for()
    _accepted_rate_is_meaningful(ACCEPTED)


@settings(max_examples=2000, deadline=None)
@given(value=st.text(alphabet=st.sampled_from(list("aZ09 _.-$ {}\t\n\r\x00\x0b\x1c\x7f\x85\xa0\u2028é")), max_size=8))
def test_plain_value_fast_path_skips_only_values_without_findings(value):
    found = Findings()
    _check_value(value, Path("v"), {"CLUSTER_ID": "c"}, False, found)
    if _PLAIN_VALUE.fullmatch(value):
        assert not found.errors and not found.warnings
