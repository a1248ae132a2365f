"""The sidecar's fluent-bit configuration."""

import re

import pytest
import yaml

from webhook.core.fluentbit import render, render_classic, render_yaml
from webhook.core.model import SidecarConfig
from webhook.core.options import Options

OPTS = Options.default()
NO_ID = OPTS.model_copy(update={"cluster_id_record": False})


def parse_classic(text):
    """A reader of fluent-bit's classic format, as its parser splits lines: (section, [(key, value)])."""
    sections = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("@"):
            sections.append(("@directive", [(line, "")]))
        elif line.startswith("["):
            sections.append((line.strip("[]"), []))
        else:
            key, _, value = line.strip().partition(" ")
            sections[-1][1].append((key, value.strip()))
    return sections


def test_minimal_config_tails_the_audit_log_tags_the_cluster_and_prints_to_stdout():
    sections = parse_classic(render_classic(SidecarConfig(), OPTS))
    assert [s[0] for s in sections] == ["INPUT", "FILTER", "OUTPUT"]
    tail = dict(sections[0][1])
    assert tail["Name"] == "tail"
    assert tail["Path"] == "/var/log/kubernetes/audit/audit.log"
    assert tail["DB"].startswith("/var/log/kubernetes/audit/")
    assert "Tag" not in tail
    assert dict(sections[1][1]) == {"Name": "modify", "Match": "*", "Set": "cluster_id ${CLUSTER_ID}"}
    assert dict(sections[2][1]) == {"Name": "stdout", "Match": "*"}


def test_cluster_id_filter_can_be_switched_off():
    sections = parse_classic(render_classic(SidecarConfig(), NO_ID))
    assert [s[0] for s in sections] == ["INPUT", "OUTPUT"]


def test_user_sections_in_order_and_the_cluster_id_filter_last():
    config = SidecarConfig(
        service={"Flush": "10", "Log_Level": "debug"},
        filters=[{"Name": "grep", "Match": "*", "Regex": "log user@example.com"},
                 {"Name": "record_modifier", "Match": "*", "Record": "team ${TEAM}"}],
        outputs=[{"Name": "forward", "Match": "*", "Host": "fluentd.svc"}, {"Name": "stdout", "Match": "*"}],
    )
    sections = parse_classic(render_classic(config, OPTS))
    assert [s[0] for s in sections] == ["SERVICE", "INPUT", "FILTER", "FILTER", "FILTER", "OUTPUT", "OUTPUT"]
    assert sections[0][1] == [("Flush", "10"), ("Log_Level", "debug")]
    assert sections[2][1] == [("Name", "grep"), ("Match", "*"), ("Regex", "log user@example.com")]
    assert dict(sections[3][1])["Record"] == "team ${TEAM}"
    # Last: whatever the cluster's filters did to cluster_id, it is set again from the env.
    assert dict(sections[4][1]) == {"Name": "modify", "Match": "*", "Set": "cluster_id ${CLUSTER_ID}"}
    assert sections[5][1] == [("Name", "forward"), ("Match", "*"), ("Host", "fluentd.svc")]


@pytest.mark.parametrize("value", ["a & b", "<tag>", "it's", 'say "hi"', "${CLUSTER_ID}", "100%", "ü-ñ", "a\\nb"])
def test_values_are_written_verbatim(value):
    config = SidecarConfig(filters=[{"Name": "grep", "Match": "*", "Regex": value}])
    assert f"    Regex {value}\n" in render_classic(config, OPTS)
    doc = yaml.safe_load(render_yaml(config, OPTS))
    assert doc["pipeline"]["filters"][0]["regex"] == value


def test_yaml_format_is_the_same_pipeline():
    config = SidecarConfig(service={"Flush": "5"},
                           filters=[{"Name": "record_modifier", "Match": "*", "Record": "a 1", "record": "b 2"}],
                           outputs=[{"Name": "forward", "Match": "*", "Host": "h"}])
    doc = yaml.safe_load(render_yaml(config, OPTS))
    assert doc["service"] == {"flush": "5"}
    assert [i["name"] for i in doc["pipeline"]["inputs"]] == ["tail"]
    assert [f["name"] for f in doc["pipeline"]["filters"]] == ["record_modifier", "modify"]
    # Two keys that differ only in case are one key with both values.
    assert doc["pipeline"]["filters"][0]["record"] == ["a 1", "b 2"]
    assert doc["pipeline"]["outputs"] == [{"name": "forward", "match": "*", "host": "h"}]


def test_render_picks_key_by_format():
    assert render(SidecarConfig(), OPTS)[0] == "fluent-bit.conf"
    assert render(SidecarConfig(), OPTS.model_copy(update={"fluentbit_format": "yaml"}))[0] == "fluent-bit.yaml"


def test_sections_start_at_column_zero_and_entries_are_indented_alike():
    text = render_classic(SidecarConfig(service={"Flush": "1"}), OPTS)
    for line in text.splitlines():
        assert line == "" or re.match(r"^\[[A-Z]+\]$", line) or re.match(r"^ {4}\S+ \S", line), line


def _bytes(size: str) -> int:
    """fluent-bit's size units (flb_utils_size_to_bytes): K, M and G are powers of 1024."""
    number, unit = re.fullmatch(r"(\d+)([KMG]?)B?", size.upper()).groups()
    return int(number) * 1024 ** " KMG".index(unit or " ")


def test_the_tail_input_ships_every_event_whole_and_early():
    from webhook.core.defaults import defaults
    from webhook.core.desired_pod import audit_flags
    from webhook.core.settings import effective_settings

    tail = dict(parse_classic(render_classic(SidecarConfig(), OPTS))[0][1])
    assert tail["Name"] == "tail"
    assert tail["Read_from_Head"] == "On"  # lines written before the sidecar started
    assert tail["DB"].startswith("/var/log/kubernetes/audit/")  # and no line twice after a restart
    assert int(tail["Refresh_Interval"]) <= 5  # a new log is found within seconds
    flags = audit_flags(effective_settings({"metadata": {"name": "c"}, "spec": {"auditLogging": {"enabled": True}}},
                                           None))
    assert flags["--audit-log-truncate-enabled"] == "true"
    largest_line = int(flags["--audit-log-truncate-max-event-size"]) + 1  # the event and its newline
    assert largest_line <= _bytes(tail["Buffer_Max_Size"])
    assert defaults()["auditLogTruncation"] == {k: v for k, v in flags.items() if "truncate" in k}


def test_an_enforced_datacenter_adds_the_clusters_outputs_to_the_default_one():
    config = SidecarConfig(outputs=[{"Name": "http", "Match": "*", "Host": "logs.example"}])
    alone = [s for s in parse_classic(render_classic(config, OPTS)) if s[0] == "OUTPUT"]
    kept = [s for s in parse_classic(render_classic(config, OPTS, keep_default_output=True)) if s[0] == "OUTPUT"]
    assert [dict(s[1])["Name"] for s in alone] == ["http"]
    assert [dict(s[1])["Name"] for s in kept] == ["stdout", "http"]
    doc = yaml.safe_load(render_yaml(config, OPTS, keep_default_output=True))
    assert [o["name"] for o in doc["pipeline"]["outputs"]] == ["stdout", "http"]
