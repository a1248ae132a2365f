"""The reconciler at fleet scale, against the real kube-apiserver and etcd of the e2e tests.

For each size: a fresh control plane with KKP's CRDs and kube-apiserver's own audit log on, N KKP
Clusters with audit logging on, their namespaces and apiserver Deployments (created concurrently),
then `audit-webhook reconcile --mode standalone` as a process with a client certificate of its own
(user audit-webhook-reconciler), so that kube-apiserver's audit log tells its requests from ours.

    make bench-scale                                  # 100 and 1,000 clusters
    make bench-scale ARGS="--sizes 100,1000,10000"    # 10,000 takes a while
    make bench-scale ARGS="--sizes 100 --reconciler-args '--api-qps 200 --api-burst 400'"

Measured, per size:
- first full sync: from the reconciler's start until every Deployment carries its settings hash
  (every cluster's ConfigMap, Secret, rollout and Events written, at the client's rate limit);
  then until the report of every Cluster's audit state and drift (its metrics) is computed, which
  shares the rate limit: the steady state is measured after both;
- handover: a second reconciler takes the Lease of the first (which is stopped): the time until
  its first resync has been through every cluster, and the writes it made (0: not a storm);
- steady state, nothing changing: the reconciler's requests per second by verb over a window,
  from kube-apiserver's audit log (its user only); the Lease renewals are counted apart;
  `apiserver_request_total` (every user) over the same window is shown beside, for reference;
- change to rollout: a Cluster's preset is changed, one cluster at a time, and the time until the
  bench's own watch sees its Deployment's new settings hash (p50, p99, max);
- the reconciler's RSS (VmRSS and peak VmHWM).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.cluster import ControlPlane, client_cert, free_port  # noqa: E402
from webhook.core import names  # noqa: E402

USER = "audit-webhook-reconciler"
DC = "bench-dc"
POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
          "rules": [{"level": "Metadata", "users": [USER]}, {"level": "None"}]}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
_cluster = yaml.safe_load((ROOT / "bench/data/cluster-kkp.yaml").read_text())
CLUSTER_SPEC = {**_cluster["spec"], "cloud": {**_cluster["spec"]["cloud"], "dc": DC},
                "auditLogging": {"enabled": True, "policyPreset": "minimal"}}
_pod = yaml.safe_load((ROOT / "examples/pods/apiserver.yaml").read_text())
POD_TEMPLATE = {"metadata": {"labels": {"app": "apiserver"}}, "spec": _pod["spec"]}


def api(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def create_fleet(api_client: client.ApiClient, n: int, workers: int = 16) -> float:
    """N namespaces, apiserver Deployments and Clusters; returns the seconds it took."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object("kubermatic.k8c.io", "v1", "kubermatic", "seeds", {
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed", "metadata": {"name": "bench", "namespace": "kubermatic"},
        "spec": {"datacenters": {DC: {"spec": {}}}}})
    raw = {"_preload_content": False}

    def one(i: int) -> None:
        name = f"bench{i:05d}"
        ns = f"cluster-{name}"
        core.create_namespace({"metadata": {"name": ns}}, **raw)
        apps.create_namespaced_deployment(ns, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "apiserver", "namespace": ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "apiserver"}},
                     "template": copy.deepcopy(POD_TEMPLATE)}}, **raw)
        custom.create_cluster_custom_object("kubermatic.k8c.io", "v1", "clusters", {
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
            "metadata": {"name": name, "labels": _cluster["metadata"]["labels"]}, "spec": CLUSTER_SPEC}, **raw)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one, i) for i in range(n)]:
            future.result()
    return time.monotonic() - start


class Rollouts:
    """The bench's own watch of apiserver Deployments: each namespace's settings hash, and when it changed."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.hashes: dict[str, str] = {}
        self.changed: dict[str, float] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        try:
            self._run()
        except Exception:  # the control plane stopped at the end of the size: nothing more to see
            return

    def _run(self) -> None:
        rv = ""
        while True:
            if not rv:
                listed = json.loads(self.apps.list_deployment_for_all_namespaces(
                    field_selector="metadata.name=apiserver", _preload_content=False).data)
                for item in listed["items"]:
                    self._seen(item)
                rv = listed["metadata"]["resourceVersion"]
            response = self.apps.list_deployment_for_all_namespaces(
                field_selector="metadata.name=apiserver", watch=True, resource_version=rv, timeout_seconds=240,
                allow_watch_bookmarks=True, _preload_content=False, _request_timeout=300)
            for line in response:
                event = json.loads(line)
                if event["type"] == "ERROR":
                    rv = ""
                    break
                rv = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self._seen(event["object"])

    def _seen(self, deploy: dict[str, Any]) -> None:
        ns = deploy["metadata"]["namespace"]
        value = (deploy["spec"]["template"]["metadata"].get("annotations") or {}).get(names.SETTINGS_HASH_ANNOTATION)
        with self.cond:
            if value and self.hashes.get(ns) != value:
                self.hashes[ns] = value
                self.changed[ns] = time.monotonic()
                self.cond.notify_all()

    def wait(self, predicate: Any, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


class AuditLog:
    """kube-apiserver's audit log, holding the reconciler's requests only (its policy says so)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def since_last(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


def by_verb(events: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """(requests by verb, Lease requests by verb)."""
    objects, leases = Counter(), Counter()
    for e in events:
        (leases if (e.get("objectRef") or {}).get("resource") == "leases" else objects)[e["verb"]] += 1
    return objects, leases


def request_totals(plane: ControlPlane) -> Counter[str]:
    """apiserver_request_total by verb, every user (kube-apiserver's own loops included)."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            totals[labels["verb"].strip('"')] += int(float(line.rsplit(" ", 1)[1]))
    return totals


class Reconciler:
    """`audit-webhook reconcile` as a process, with the reconciler's own kubeconfig."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path, extra: list[str], label: str) -> None:
        self.port = free_port()
        self.log = open(plane.work / f"{label}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "reconcile", "--kubeconfig", str(kubeconfig), "--mode", "standalone",
             "--health-host", "127.0.0.1", "--health-port", str(self.port), *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started = time.monotonic()

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return -1.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))

    def rss_mib(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
        return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        self.log.close()
        return code


def reconciler_kubeconfig(plane: ControlPlane) -> Path:
    certs = plane.work / "reconciler-cert"
    client_cert(plane.pki, certs, USER, "system:masters")
    path = plane.work / "reconciler-kubeconfig"
    kc = yaml.safe_load(plane.kubeconfig.read_text())
    kc["users"] = [{"name": "admin", "user": {"client-certificate": str(certs / "client.crt"),
                                              "client-key": str(certs / "client.key")}}]
    path.write_text(yaml.safe_dump(kc))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{n}-"))
    (work / "audit-policy.yaml").write_text(yaml.safe_dump(POLICY))
    plane = ControlPlane(work, extra_args=[f"--audit-policy-file={work / 'audit-policy.yaml'}",
                                           f"--audit-log-path={work / 'audit.log'}", "--audit-log-maxsize=0",
                                           "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s"])
    extra = shlex.split(args.reconciler_args)
    row: dict[str, Any] = {"clusters": n}
    try:
        plane.start()
        plane.kubectl("apply", "-k", str(ROOT / "deploy/crds"))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io",
                      "crd/seeds.kubermatic.k8c.io")
        for ns in ("kubermatic", "audit-webhook"):
            plane.kubectl("create", "namespace", ns)
        admin = api(plane.kubeconfig)
        row["create_s"] = create_fleet(admin, n)
        print(f"[{n}] created {n} clusters, namespaces and Deployments in {row['create_s']:.0f}s", flush=True)
        rollouts = Rollouts(admin)
        kubeconfig = reconciler_kubeconfig(plane)
        audit = AuditLog(work / "audit.log")

        # 1. First full sync: every Deployment rolled to its settings hash.
        first = Reconciler(plane, kubeconfig, extra, "reconciler-1")
        synced = rollouts.wait(lambda: len(rollouts.hashes) >= n, args.timeout)
        row["first_sync_s"] = time.monotonic() - first.started
        if not synced:
            raise RuntimeError(f"only {len(rollouts.hashes)} of {n} Deployments rolled in {args.timeout}s")
        print(f"[{n}] first full sync {row['first_sync_s']:.1f}s", flush=True)
        deadline = time.monotonic() + args.timeout  # the Events and the re-reconciles of our own writes
        while first.metric("audit_webhook_reconcile_queue_depth") != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        # The report's first computation of every namespace, and of those the sync changed, is over:
        # a pass that ended after the last watch event, then one that began after it (they run in turn).
        time.sleep(2)
        for _ in range(2):
            since = time.time()
            while first.metric("audit_webhook_cluster_report_timestamp_seconds") < since and \
                    time.monotonic() < deadline:
                time.sleep(0.5)
        row["report_s"] = time.monotonic() - first.started
        print(f"[{n}] every Cluster's report computed {row['report_s']:.1f}s after the start", flush=True)
        time.sleep(args.settle)

        # 2. Steady state, nothing changing.
        audit.since_last()
        before, t0 = request_totals(plane), time.monotonic()
        time.sleep(args.window)
        time.sleep(2)  # the audit log's batch
        elapsed = time.monotonic() - t0
        objects, leases = by_verb(audit.since_last())
        everyone = request_totals(plane) - before
        row["steady"] = {v: c / elapsed for v, c in objects.items()}
        row["steady_reads_per_s"] = sum(c for v, c in objects.items() if v not in WRITES) / elapsed
        row["steady_writes_per_s"] = sum(c for v, c in objects.items() if v in WRITES) / elapsed
        row["lease_per_s"] = {v: c / elapsed for v, c in leases.items()}
        row["all_users_per_s"] = {v: c / elapsed for v, c in everyone.items()}
        print(f"[{n}] steady state over {elapsed:.0f}s: {dict(objects)}; Lease {dict(leases)}; "
              f"apiserver_request_total (all users) {dict(everyone)}", flush=True)

        # 3. Change to rollout, one cluster at a time.
        samples = [f"bench{i:05d}" for i in range(0, n, max(1, n // args.changes))][:args.changes]
        custom = client.CustomObjectsApi(admin)
        latencies = []
        for name in samples:
            ns = f"cluster-{name}"
            old = rollouts.hashes[ns]
            t = time.monotonic()
            custom.patch_cluster_custom_object("kubermatic.k8c.io", "v1", "clusters", name,
                                               {"spec": {"auditLogging": {"policyPreset": "recommended"}}})
            if not rollouts.wait(lambda ns=ns, old=old: rollouts.hashes[ns] != old, 60):
                raise RuntimeError(f"{name}: no rollout within 60s")
            latencies.append(rollouts.changed[ns] - t)
        row["rollout_p50_s"] = statistics.median(latencies)
        row["rollout_p99_s"] = percentile(latencies, 0.99)
        row["rollout_max_s"] = max(latencies)
        row["rss_mib"], row["peak_rss_mib"] = first.rss_mib()
        print(f"[{n}] change to rollout p50 {row['rollout_p50_s']:.3f}s p99 {row['rollout_p99_s']:.3f}s; "
              f"RSS {row['rss_mib']:.0f} MiB (peak {row['peak_rss_mib']:.0f})", flush=True)

        # 4. Handover: a second reconciler takes over; its first pass is a resync from its caches.
        second = Reconciler(plane, kubeconfig, extra, "reconciler-2")
        time.sleep(3)  # its caches sync while the first still leads
        audit.since_last()
        row["first_exit_code"] = first.stop()
        t = time.monotonic()
        deadline = t + args.timeout
        while second.metric("audit_webhook_reconcile_duration_seconds_count") < n and time.monotonic() < deadline:
            time.sleep(0.2)
        row["handover_s"] = time.monotonic() - t
        time.sleep(2)
        objects, _ = by_verb(audit.since_last())
        row["handover_writes"] = sum(c for v, c in objects.items() if v in WRITES)
        row["handover_reads"] = sum(c for v, c in objects.items() if v not in WRITES)
        row["second_exit_code"] = second.stop()
        print(f"[{n}] handover resync {row['handover_s']:.1f}s, {row['handover_writes']} writes, "
              f"{row['handover_reads']} reads", flush=True)
    finally:
        plane.stop()
    return row


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| clusters | first full sync | steady reads/s | steady object writes/s | change-to-rollout p50 / p99 / max "
           "| reconciler RSS | handover resync (writes) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['clusters']:,} | {r['first_sync_s']:.1f} s | {r['steady_reads_per_s']:.2f} "
                   f"| {r['steady_writes_per_s']:.2f} | {r['rollout_p50_s']:.2f} / {r['rollout_p99_s']:.2f} / "
                   f"{r['rollout_max_s']:.2f} s | {r['rss_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f}) "
                   f"| {r['handover_s']:.1f} s ({r['handover_writes']}) |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000", help="cluster counts, comma-separated (default: 100,1000)")
    p.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured (default: 60)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the first sync before measuring")
    p.add_argument("--changes", type=int, default=50, help="Clusters changed one by one for the rollout latency")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for a sync")
    p.add_argument("--reconciler-args", default="", help="more arguments for `audit-webhook reconcile`")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(n, args))
        print(table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
