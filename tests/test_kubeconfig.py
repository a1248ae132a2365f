"""The audit webhook kubeconfig kube-apiserver would refuse, or accept with a note."""

import pytest

from tests.helpers import KUBECONFIG
from webhook.core.validation.kubeconfig import check_kubeconfig


def variant(old, new):
    assert old in KUBECONFIG
    return KUBECONFIG.replace(old, new).encode()


@pytest.mark.parametrize(("data", "problems", "notes"), [
    (KUBECONFIG.encode(), [], []),
    (variant("https://audit-sink.audit.svc:8443/events", "http://10.0.0.1:30001"), [],
     ["sends events over plain http://"]),
    (variant("current-context: sink\n", ""), ["has no current-context"], []),
    (variant("current-context: sink", "current-context: other"),
     ["current-context names a context that is not in contexts"], []),
    (variant("    cluster: sink\n", ""), ["the current context names no cluster"], []),
    (variant("    cluster: sink\n", "    cluster: elsewhere\n"),
     ["the current context names a cluster that is not in clusters"], []),
    (variant("    server: https://audit-sink.audit.svc:8443/events\n", ""), ["the current cluster has no server URL"], []),
    (variant("https://audit-sink.audit.svc:8443/events", "audit-sink.audit.svc:8443"),
     ["the current cluster's server is not an http:// or https:// URL with a host"], []),
    (variant("https://audit-sink.audit.svc:8443/events", "ftp://x"),
     ["the current cluster's server is not an http:// or https:// URL with a host"], []),
    (variant("https://audit-sink.audit.svc:8443/events", "https://"),
     ["the current cluster's server is not an http:// or https:// URL with a host"], []),
    (variant('    user: ""', "    user: bob"), ["the current context names a user that is not in users"], []),
    (variant("kind: Config", "kind: Pod"), ["must have apiVersion v1 and kind Config"], []),
    (b"\xff\xfe", ["is not UTF-8 text"], []),
    (b"clusters: [", ["is not valid YAML"], []),
    (b"- a\n- b\n", ["is not a kubeconfig (apiVersion: v1, kind: Config)"], []),
    (variant("    server: https://audit-sink.audit.svc:8443/events\n",
             "    server: https://x\n    certificate-authority: /a\n    certificate-authority-data: QQ==\n"),
     ["the current cluster sets both certificate-authority and certificate-authority-data"],
     ["names a CA file; only the Secret's own files are mounted"]),
    (variant("    server: https://audit-sink.audit.svc:8443/events\n",
             "    server: https://x\n    insecure-skip-tls-verify: true\n"), [], ["skips server certificate checks"]),
    (variant("    server: https://audit-sink.audit.svc:8443/events\n",
             "    server: https://x\n    insecure-skip-tls-verify: true\n    certificate-authority-data: QQ==\n"),
     ["the current cluster sets a certificate authority together with insecure-skip-tls-verify"], []),
])
def test_kubeconfig(data, problems, notes):
    report = check_kubeconfig(data)
    assert report.problems == problems
    assert report.notes == notes
