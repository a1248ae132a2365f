"""Image references: registries, repositories, and KKP's registry rewrite."""

import pytest

from tests.helpers import bare_pod, cluster
from webhook.core.desired_pod import inject, injection_for
from webhook.core.images import same_repository, split_image, with_registry
from webhook.core.options import Options
from webhook.core.settings import effective_settings


@pytest.mark.parametrize(("image", "parts"), [
    ("docker.io/fluent/fluent-bit:4.2.0", ("docker.io", "fluent/fluent-bit", ":4.2.0")),
    ("fluent/fluent-bit:4.0.0", ("docker.io", "fluent/fluent-bit", ":4.0.0")),
    ("registry.corp.example/fluent/fluent-bit:4.0.0", ("registry.corp.example", "fluent/fluent-bit", ":4.0.0")),
    ("localhost:5000/fluent/fluent-bit@sha256:ab", ("localhost:5000", "fluent/fluent-bit", "@sha256:ab")),
    ("r.example:443/fluent/fluent-bit:4.2.0@sha256:ab", ("r.example:443", "fluent/fluent-bit", ":4.2.0@sha256:ab")),
    ("busybox", ("docker.io", "library/busybox", "")),
])
def test_split_image(image, parts):
    assert split_image(image) == parts


def test_with_registry_rewrites_like_overwrite_registry():
    assert with_registry("docker.io/fluent/fluent-bit:4.2.0", "registry.corp.example") == \
        "registry.corp.example/fluent/fluent-bit:4.2.0"
    assert with_registry("fluent/fluent-bit:4.2.0", "") == "fluent/fluent-bit:4.2.0"
    assert same_repository("registry.corp.example/fluent/fluent-bit:4.0.0", "docker.io/fluent/fluent-bit:4.2.0")
    assert same_repository("harbor.corp.example/kkp/fluent/fluent-bit:4.0.0", "docker.io/fluent/fluent-bit:4.2.0")
    assert not same_repository("evil.example/other/fluent-bit:1", "docker.io/fluent/fluent-bit:4.2.0")
    assert not same_repository("evil.example/notfluent/fluent-bit:1", "docker.io/fluent/fluent-bit:4.2.0")
    assert not same_repository(None, "docker.io/fluent/fluent-bit:4.2.0")


def _injected(pod, options=None):
    options = options or Options.default()
    return inject(pod, injection_for(effective_settings(cluster(audit={"enabled": True}), None), options))[0]


def _sidecar(pod):
    return next(c for c in pod["spec"]["containers"] if c["name"] == "audit-logs")


def test_an_existing_fluent_bit_sidecar_keeps_its_registry_and_tag():
    pod = bare_pod()
    pod["spec"]["containers"].append({"name": "audit-logs", "image": "registry.corp.example/fluent/fluent-bit:4.0.0"})
    assert _sidecar(_injected(pod))["image"] == "registry.corp.example/fluent/fluent-bit:4.0.0"


def test_a_sidecar_of_another_image_is_replaced_and_new_ones_use_the_operators_registry():
    pod = bare_pod()
    pod["spec"]["containers"].append({"name": "audit-logs", "image": "evil.example/miner:latest"})
    assert _sidecar(_injected(pod))["image"] == Options.default().sidecar_image
    air_gapped = Options.default().model_copy(update={
        "sidecar_image": with_registry(Options.default().sidecar_image, "registry.corp.example")})
    assert _sidecar(_injected(bare_pod(), air_gapped))["image"].startswith("registry.corp.example/fluent/fluent-bit:")
