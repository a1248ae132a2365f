"""`helm install`, `upgrade`, `rollback` and `uninstall` of charts/audit-webhook against the real
kube-apiserver, beside KKP's CRDs and objects (KKP mode) and on a seed without KKP (standalone).

Real: helm, kubectl, etcd and kube-apiserver built from Go modules, KKP's CRDs from shared/kkp/, the
objects the chart installs, and audit-webhook's `serve` and `reconcile`, run with the arguments,
ConfigMaps, Secret and ServiceAccount tokens of the Deployments Helm created.

Fake, because no kubelet, controller-manager or kube-proxy runs here: `Kubelet` runs each
Deployment's pod template as local processes (ConfigMap and emptyDir volumes as folders its
arguments point at, loopback ports, the ServiceAccount's token) and, when the template changes,
rolls them as the chart's RollingUpdate does (a new replica ready before an old one is taken out of
the Service, its preStop sleep, then SIGTERM); `ServiceProxy` stands in for the Service, sending each
new connection to a ready replica. KKP's controllers do not run either: the objects they would write
(audit-config, audit-logs-fluentbit, the apiserver Deployment and its Pods) are written by the test.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.cluster import ROOT, ControlPlane, eventually, free_port
from tests.e2e.test_kkp import KKP, KKP_DEPLOYMENTS, _sa_kubeconfig, kkp_cluster, kkp_pod, kkp_seed
from webhook.core import names

CHART = ROOT / "charts/audit-webhook"
RELEASE = NAMESPACE = "audit-webhook"
CLUSTER = "helmkkp"
CLUSTER_NS = f"cluster-{CLUSTER}"
WEBHOOK_KINDS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")


def run_helm(helm: Path, plane: ControlPlane, *args: str, values: dict[str, Any] | None = None
             ) -> subprocess.CompletedProcess[str]:
    extra: list[str] = []
    if values is not None:
        path = plane.work / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    env = {**os.environ, "HELM_CACHE_HOME": str(plane.work / "helm/cache"),
           "HELM_CONFIG_HOME": str(plane.work / "helm/config"), "HELM_DATA_HOME": str(plane.work / "helm/data")}
    result = subprocess.run([str(helm), *args, "--kubeconfig", str(plane.kubeconfig), *extra], capture_output=True,
                            text=True, timeout=180, env=env, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result


def get(plane: ControlPlane, *args: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


class ServiceProxy:
    """The Service audit-webhook: each new TCP connection goes to one ready replica, round robin."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.backends: list[int] = []
        self._next = itertools.count()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            backends = list(self.backends)
            if not backends:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", backends[next(self._next) % len(backends)]))
            except OSError:
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


@dataclass
class Replica:
    """One Pod of a Deployment, as a local process."""

    template: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    pre_stop_seconds: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def max_unavailable(deployment: dict[str, Any]) -> int:
    """How many replicas a RollingUpdate may take down, as the Deployment controller computes it
    (a percentage rounds down; the default is 25%)."""
    value = deployment["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable", "25%")
    if isinstance(value, int):
        return value
    return int(deployment["spec"]["replicas"] * int(value.rstrip("%")) / 100)


@dataclass
class Kubelet:
    """Runs the pod templates of the Deployments in the release namespace as local processes."""

    plane: ControlPlane
    proxy: ServiceProxy
    running: dict[str, list[Replica]] = field(default_factory=dict)
    rollouts: dict[str, int] = field(default_factory=dict)
    _pods: Iterator[int] = field(default_factory=itertools.count)

    def sync(self) -> None:
        """Start or roll every Deployment whose pod template is not the one running."""
        for deployment in get(self.plane, "deployments", "-n", NAMESPACE)["items"]:
            name = deployment["metadata"]["name"]
            template = json.dumps(deployment["spec"]["template"], sort_keys=True)
            old = self.running.get(name, [])
            if old and all(r.template == template for r in old):
                continue
            # A Deployment that may not lose a ready replica starts the new ones first; any other
            # stops old ones first (one at a time is all these tests need to tell the two apart).
            surge_first = max_unavailable(deployment) == 0
            if not surge_first:
                self._stop(name, old)
            new = [self._start(deployment, template) for _ in range(deployment["spec"]["replicas"])]
            self.running[name] = new
            if name == "audit-webhook":
                self.proxy.backends = self.proxy.backends + [r.port for r in new]
            if surge_first:
                self._stop(name, old)
            self.rollouts[name] = self.rollouts.get(name, 0) + (1 if old else 0)

    def _stop(self, name: str, replicas: list[Replica]) -> None:
        """Out of the Service's endpoints first, then the preStop hook, then SIGTERM."""
        for replica in replicas:
            if name == "audit-webhook":
                self.proxy.backends = [p for p in self.proxy.backends if p != replica.port]
            time.sleep(replica.pre_stop_seconds)
            replica.stop()

    def _start(self, deployment: dict[str, Any], template: str) -> Replica:
        pod = f"{deployment['metadata']['name']}-{next(self._pods)}"
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        folder = self.plane.work / "pods" / pod
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            local = folder / mount["name"]
            local.mkdir(parents=True)
            source = volumes[mount["name"]]
            if "configMap" in source:
                config_map = get(self.plane, "configmap", source["configMap"]["name"], "-n", NAMESPACE)
                for key, text in config_map["data"].items():
                    (local / key).write_text(text)
            mounts[mount["mountPath"]] = local
        args = list(container["args"])
        for i, arg in enumerate(args):
            for path, local in mounts.items():
                if "=" in arg and arg.split("=", 1)[1].startswith(path):
                    args[i] = arg.replace("=" + path, f"={local}", 1)
        kubeconfig = _sa_kubeconfig(self.plane, folder, spec["serviceAccountName"])
        port = free_port()
        if args[0] == "serve":
            local_args = ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(free_port()),
                          "--reload-interval", "0.5"]
        else:
            local_args = ["--health-host", "127.0.0.1", "--health-port", str(port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "POD_NAMESPACE": NAMESPACE, "POD_NAME": pod}
        log = folder / "log"
        proc = subprocess.Popen([sys.executable, "-m", "webhook", *args, "--kubeconfig", str(kubeconfig),
                                 *local_args], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        replica = Replica(template, proc, port, log, pre_stop)
        probe = container["readinessProbe"]["httpGet"]
        https = probe.get("scheme") == "HTTPS"
        url = f"{'https' if https else 'http'}://127.0.0.1:{port}{probe['path']}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{pod} exited:\n{log.read_text()[-3000:]}"
            try:
                context = self.plane.client_context(mounts["/certs"] / "ca.crt") if https else None
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    if response.status == 200:
                        return replica
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"{pod} never became ready:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        for replicas in self.running.values():
            for replica in replicas:
                replica.stop()
        self.running.clear()
        self.proxy.backends = []


@dataclass
class PodStream:
    """KKP creating apiserver Pods of an audited cluster, one after another, while the webhook changes."""

    plane: ControlPlane
    created: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PodStream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        fixture = sorted(KKP_DEPLOYMENTS)[0]
        for n in itertools.count():
            if self._stop.is_set():
                return
            pod = kkp_pod(CLUSTER_NS, fixture, with_sidecar=False)
            pod["metadata"]["name"] = f"apiserver-stream-{n}"
            result = self.plane.kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(pod), check=False)
            if result.returncode == 0:
                self.created.append(json.loads(result.stdout))
            else:
                self.refused.append(result.stderr)

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)


def injected(pod: dict[str, Any]) -> bool:
    return (names.SETTINGS_HASH_ANNOTATION in (pod["metadata"].get("annotations") or {})
            and any(c["name"] == names.SIDECAR_CONTAINER for c in pod["spec"]["containers"]))


def kkp_objects(plane: ControlPlane) -> dict[tuple[str, ...], Any]:
    """What KKP owns, as resourceVersions, and its CRDs' schemas: none of it may change."""
    state: dict[tuple[str, ...], Any] = {
        ("crd", crd): get(plane, "crd", crd)["spec"] for crd in ("clusters.kubermatic.k8c.io", "seeds.kubermatic.k8c.io")}
    for kind, name, namespace in (("cluster", CLUSTER, ""), ("seed", "kubermatic", "kubermatic"),
                                  ("namespace", CLUSTER_NS, ""), ("deployment", "apiserver", CLUSTER_NS),
                                  ("configmap", "audit-config", CLUSTER_NS),
                                  ("secret", names.SECRET_FLUENTBIT, CLUSTER_NS)):
        obj = get(plane, kind, name, *(("-n", namespace) if namespace else ()))
        assert obj is not None, (kind, name)
        state[(kind, namespace, name)] = obj["metadata"]["resourceVersion"]
    return state


def write_kkp_objects(plane: ControlPlane) -> None:
    """A KKP seed with one audited cluster, as KKP's controllers leave it."""
    plane.kubectl("apply", "--server-side", "-f", str(KKP / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io",
                  "crd/seeds.kubermatic.k8c.io")
    plane.kubectl("create", "namespace", "kubermatic")
    plane.kubectl("create", "namespace", CLUSTER_NS)
    fixture = sorted(KKP_DEPLOYMENTS)[0]
    # KKP's rendered apiserver Deployment (the fixture has no apiVersion and kind, as KKP renders it).
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  **copy.deepcopy(KKP_DEPLOYMENTS[fixture])}
    deployment["metadata"]["namespace"] = CLUSTER_NS
    deployment.pop("status", None)
    plane.apply(kkp_seed(), kkp_cluster(CLUSTER, "kkp-plain", {"enabled": True, "policyPreset": "minimal"}),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": CLUSTER_NS},
                 "data": {"policy.yaml": (KKP / "audit-policies/minimal.yaml").read_text()}},
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": names.SECRET_FLUENTBIT,
                                                                    "namespace": CLUSTER_NS},
                 "stringData": {"fluent-bit.conf": "[INPUT]\n    Name tail\n"}},
                deployment)


def pod_templates(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]
            for d in get(plane, "deployments", "-n", NAMESPACE)["items"]}


def test_install_upgrade_rollback_and_uninstall_beside_kkp(helm, tmp_path_factory):
    """Helm installs the KKP mode with --skip-crds; an upgrade with changed values and a rollback
    roll both Deployments while KKP keeps creating apiserver Pods, and none of them is refused or
    left without its audit sidecar; uninstall leaves no webhook configuration and every KKP object
    as it was."""
    plane = ControlPlane(tmp_path_factory.mktemp("helm-kkp"))
    proxy = ServiceProxy()
    kubelet = Kubelet(plane, proxy)
    stream: PodStream | None = None
    try:
        plane.start()
        write_kkp_objects(plane)
        before = kkp_objects(plane)
        installed = {
            "webhooks": {"url": f"https://127.0.0.1:{proxy.port}"},
            "mtls": {"clientCA": {"pem": (plane.pki / "ca.crt").read_text()}},
            "server": {"replicas": 1}, "reconciler": {"replicas": 1, "extraArgs": ["--resync-period=30"]},
        }
        run_helm(helm, plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                 "--skip-crds", values=installed)
        assert kkp_objects(plane) == before  # KKP's CRDs untouched by the chart's crds/
        kubelet.sync()
        # Serving: the server wrote its CA into both configurations, the reconciler the audited namespace.
        assert eventually(lambda: all(w["clientConfig"].get("caBundle") for kind in WEBHOOK_KINDS
                                      for w in get(plane, kind, "audit-webhook")["webhooks"]), timeout=60)
        assert eventually(lambda: CLUSTER_NS in next(
            w for w in get(plane, "mutatingwebhookconfiguration", "audit-webhook")["webhooks"]
            if w["name"].startswith("inject."))["namespaceSelector"]["matchExpressions"][0]["values"], timeout=60)
        assert eventually(lambda: names.SETTINGS_HASH_ANNOTATION in (plane.create_json(
            kkp_pod(CLUSTER_NS, sorted(KKP_DEPLOYMENTS)[0], False), "--dry-run=server")["metadata"].get(
            "annotations") or {}), timeout=60)

        stream = PodStream(plane).start()
        first = pod_templates(plane)
        upgraded = {**installed, "image": {"tag": "0.1.1"}, "logFormat": "text",
                    "config": {"egress": {"cidrs": ["10.20.0.0/16"]}}}
        run_helm(helm, plane, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-crds",
                 values=upgraded)
        second = pod_templates(plane)
        for name, template in second.items():
            assert template != first[name], name
            assert template["spec"]["containers"][0]["image"].endswith(":0.1.1")
            assert "--log-format=text" in template["spec"]["containers"][0]["args"]
        config = get(plane, "configmap", "audit-webhook-config", "-n", NAMESPACE)["data"]["config.yaml"]
        assert yaml.safe_load(config)["egress"]["cidrs"] == ["10.20.0.0/16"]
        kubelet.sync()
        during_upgrade = len(stream.created)

        run_helm(helm, plane, "rollback", RELEASE, "1", "--namespace", NAMESPACE)
        assert pod_templates(plane) == first
        kubelet.sync()
        time.sleep(2)
        stream.stop()
        assert kubelet.rollouts == {"audit-webhook": 2, "audit-webhook-reconciler": 2}
        assert stream.refused == []
        assert during_upgrade > 0 and len(stream.created) > during_upgrade
        assert [p["metadata"]["name"] for p in stream.created if not injected(p)] == []
        history = json.loads(run_helm(helm, plane, "history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"),
                                                                   (3, "deployed")]

        run_helm(helm, plane, "uninstall", RELEASE, "--namespace", NAMESPACE)
        kubelet.stop()
        for kind in (*WEBHOOK_KINDS, "validatingadmissionpolicies", "validatingadmissionpolicybindings",
                     "clusterroles", "clusterrolebindings"):
            left = [i["metadata"]["name"] for i in get(plane, kind)["items"]]
            assert not [n for n in left if n.startswith("audit-webhook")], (kind, left)
        assert get(plane, "deployments", "-n", NAMESPACE)["items"] == []
        assert kkp_objects(plane) == before
        assert get(plane, "pods", "-n", CLUSTER_NS)["items"]  # the control plane's Pods are still there
    finally:
        if stream is not None and stream._thread is not None and stream._thread.is_alive():
            stream.stop()
        kubelet.stop()
        proxy.close()
        plane.stop()


def test_standalone_install_brings_the_crds_and_uninstall_keeps_them(helm, tmp_path_factory):
    """Without KKP, `helm install` creates the Cluster and Seed CRDs from crds/; `helm uninstall`
    removes the webhook and leaves them, and the Clusters in them, in place."""
    plane = ControlPlane(tmp_path_factory.mktemp("helm-standalone"))
    try:
        plane.start()
        run_helm(helm, plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                 values={"mode": "standalone"})
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io",
                      "crd/seeds.kubermatic.k8c.io")
        crds = {crd: get(plane, "crd", crd)["metadata"]["uid"]
                for crd in ("clusters.kubermatic.k8c.io", "seeds.kubermatic.k8c.io")}
        assert get(plane, "clusterrole", "audit-webhook-reconciler-rollouts") is not None
        for template in pod_templates(plane).values():
            assert "--mode=standalone" in template["spec"]["containers"][0]["args"]

        run_helm(helm, plane, "uninstall", RELEASE, "--namespace", NAMESPACE)
        for kind in WEBHOOK_KINDS:
            assert get(plane, kind, "audit-webhook") is None
        assert {crd: (get(plane, "crd", crd) or {}).get("metadata", {}).get("uid") for crd in crds} == crds
        # With the webhook gone nothing judges Clusters any more, and the CRDs still serve them.
        plane.apply(kkp_cluster("afterhelm", "dc1", None))
        assert get(plane, "cluster", "afterhelm") is not None
    finally:
        plane.stop()
