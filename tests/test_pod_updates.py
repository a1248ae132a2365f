"""Changes to an injected apiserver Pod after admission (webhook/core/pod_updates.py)."""

import copy

import pytest

from tests.helpers import bare_pod, cluster, container
from webhook.core.desired_pod import inject, injection_for
from webhook.core.options import Options
from webhook.core.pod_updates import pod_update_problems
from webhook.core.settings import effective_settings

INJECTED = inject(bare_pod(), injection_for(effective_settings(cluster(audit={"enabled": True}), None),
                                             Options.default()))[0]


def changed(edit):
    pod = copy.deepcopy(INJECTED)
    edit(pod)
    return pod


def debug(*mounts):
    def add(pod):
        pod["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox",
                                               "volumeMounts": [{"name": m, "mountPath": f"/{m}"} for m in mounts]}]
    return add


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda p: container(p, "audit-logs").update(image="evil.example/fluent-bit:1"),
     'container "audit-logs" of an audited apiserver Pod cannot change after admission'),
    (lambda p: container(p, "apiserver")["args"].append("--audit-policy-file=/tmp/none"),
     'container "apiserver" of an audited apiserver Pod cannot change after admission'),
    (debug("audit-log"), 'ephemeral container "dbg" may not mount audit-log'),
    (debug("audit-webhook-backend", "audit-config"), "may not mount audit-config, audit-webhook-backend"),
])
def test_an_injected_pod_keeps_its_audit_setup(edit, problem):
    assert problem in "; ".join(pod_update_problems(INJECTED, changed(edit)))


@pytest.mark.parametrize("edit", [
    lambda p: p["metadata"].setdefault("labels", {}).update(extra="x"),
    debug("tmp"),
    lambda p: p["spec"].update(activeDeadlineSeconds=30),
])
def test_other_updates_go_on(edit):
    assert pod_update_problems(INJECTED, changed(edit)) == []
