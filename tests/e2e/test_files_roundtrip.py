"""What `audit-webhook files` prints survives the documented path, `files | kubectl apply -f -`,
byte for byte: decoded by PyYAML and by the real kubectl (client-side dry run against the real
kube-apiserver of the e2e plane), the fluent-bit configuration is exactly what the reconciler
writes. And `files` prints nothing for a Cluster that /validate refuses."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster import ControlPlane
from webhook.core.manifests import needed_files
from webhook.core.options import Options
from webhook.core.settings import effective_settings

AWKWARD_VALUES = [
    "prüfung-日本-🙂",
    "a # not a comment",
    "[OUTPUT] stays inside",
    "@INCLUDE stays inside",
    "quotes ' and \" and \\ backslash",
    "colon: and - dash",
    "${TEAM}-${CLUSTER_ID}",
    "yes",
    "0x1F",
    "~",
    "trailing space ",
    "{flow: map}",
]


def _cluster(values: list[str]) -> dict:
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "roundtrip01"},
            "spec": {"cloud": {"dc": "x"}, "auditLogging": {"enabled": True, "sidecar": {
                "extraEnvs": [{"name": "TEAM", "value": "ü & 'x' #1"}],
                "config": {"service": {"Flush": "1"},
                           "filters": [{"Name": "record_modifier", "Match": "*",
                                        **{f"Record{i}": f"k{i} {v}" for i, v in enumerate(values)}}],
                           "outputs": [{"Name": "http", "Match": "*", "Host": "logs.example.com",
                                        **{f"Header{i}": v for i, v in enumerate(values)}}]}}}}}


def _files(tmp_path: Path, obj: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "cluster.yaml"
    # ASCII-only YAML escapes every other character, so the file holds exactly these strings.
    path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    # The Seed of its datacenter, which enforces nothing: without one `files` would not answer.
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
                                    "metadata": {"name": "s", "namespace": "kubermatic"},
                                    "spec": {"datacenters": {"x": {"spec": {}}}}}))
    return subprocess.run([sys.executable, "-m", "webhook", "files", "--mode", "standalone", "--cluster", str(path),
                           "--seed", str(seed),
                           *extra],
                          capture_output=True, text=True, encoding="utf-8", timeout=60)


def _json_stream(text: str) -> list[dict]:
    """kubectl prints one JSON document per object, one after another."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        obj, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        out.append(obj)
        at = end
    return out


@pytest.mark.parametrize("fmt", ["classic", "yaml"])
def test_files_survive_pyyaml_and_kubectl_byte_for_byte(plane: ControlPlane, tmp_path: Path, fmt: str):
    obj = _cluster(AWKWARD_VALUES)
    result = _files(tmp_path, obj, "--fluent-bit-format", fmt)
    assert result.returncode == 0, result.stderr
    options = Options.default().model_copy(update={"fluentbit_format": fmt})
    expected = {f["metadata"]["name"]: f for f in needed_files(effective_settings(obj, None), options)}
    key = "fluent-bit.conf" if fmt == "classic" else "fluent-bit.yaml"
    want = expected["audit-logs-fluentbit"]["stringData"][key]
    assert all(v in want for v in AWKWARD_VALUES)

    # The Secret is printed as the reconciler creates it: `data`, base64 of the UTF-8 text.
    by_pyyaml = {i["metadata"]["name"]: i for i in yaml.safe_load(result.stdout)["items"]}
    assert base64.b64decode(by_pyyaml["audit-logs-fluentbit"]["data"][key]).decode() == want
    assert by_pyyaml["audit-config"]["data"] == expected["audit-config"]["data"]

    decoded = plane.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", stdin=result.stdout)
    by_kubectl = {i["metadata"]["name"]: i for i in _json_stream(decoded.stdout)}
    assert base64.b64decode(by_kubectl["audit-logs-fluentbit"]["data"][key]).decode() == want
    assert by_kubectl["audit-config"]["data"] == expected["audit-config"]["data"]


@pytest.mark.parametrize("hostile", ["fluentd\x85@INCLUDE /etc/passwd", "x\u2028[OUTPUT]", "x\u2029@SET CLUSTER_ID=b",
                                     "x\x0b", "x\x0c", "${NOPE}"])
def test_files_refuses_what_validate_refuses(tmp_path: Path, hostile: str):
    obj = _cluster(["ok"])
    obj["spec"]["auditLogging"]["sidecar"]["config"]["outputs"][0]["Host"] = hostile
    result = _files(tmp_path, obj)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.auditLogging.sidecar.config.outputs[0][Host]:" in result.stderr
