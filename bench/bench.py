"""Benchmark /mutate and /validate over TLS against a bare aiohttp endpoint, and /mutate at fleet scale.

    make bench                 # full run (about 9 minutes)
    make bench ARGS=--quick    # a short smoke run

Each server runs in its own process pinned to CPU 0 (one core, as the targets say); the load
generator, vegeta (built from Go modules by bench/build.sh), runs on CPU 1. The webhook runs as
deployed: log level INFO and the decision log on at its default level, its lines written to a file.

Throughput is measured closed-loop over a fixed number of keep-alive TLS connections (1 and 16),
each sending its next request as soon as the answer to the last one is in. The bare endpoint and the
webhook run side by side, their runs interleaved (alternating which goes first) so that the shared
machine's drift hits both alike. Latency is measured open-loop at a fixed rate (requests are sent on
a schedule whether or not earlier ones have answered, so queueing shows up in the tail). Every
figure is the median of --runs runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VEGETA = ROOT / ".e2e-bin/vegeta"
sys.path.insert(0, str(ROOT))

from tests.ports import free_port  # noqa: E402
from webhook.adapters.certs import ServiceName, ensure_certs  # noqa: E402

POD = yaml.safe_load((ROOT / "examples/pods/apiserver.yaml").read_text())
CLUSTER_AUDIT = {
    "enabled": True, "policyPreset": "recommended",
    "sidecar": {"extraEnvs": [{"name": "TEAM", "value": "payments"}],
                "config": {"service": {"Flush": "5"},
                           "filters": [{"Name": "grep", "Match": "*", "Exclude": "log system:kube-scheduler"}],
                           "outputs": [{"Name": "forward", "Match": "*", "Host": "fluentd.logging.svc",
                                        "Port": "24224"}]}},
    "webhookBackend": {"auditWebhookConfig": {"name": "audit-webhook-backend"}, "auditWebhookInitialBackoff": "5s"},
}
KUBECONFIG = ("apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: https://sink.example/events\n"
              "contexts:\n- name: s\n  context:\n    cluster: s\ncurrent-context: s\n")


def cluster(i: int) -> dict[str, Any]:
    name = f"bench{i:05d}"
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"cloud": {"dc": "dc1"}, "auditLogging": copy.deepcopy(CLUSTER_AUDIT)}}


def write_store(root: Path, n: int) -> None:
    """A Seed and `n` Clusters with their webhook-backend Secrets, 500 Clusters a file (the store reads
    no file of more than 200,000 YAML nodes)."""
    root.mkdir(parents=True, exist_ok=True)
    seed = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed", "metadata": {"name": "s", "namespace": "kubermatic"},
            "spec": {"datacenters": {"dc1": {"spec": {}}}}}
    (root / "seed.yaml").write_text(yaml.safe_dump(seed, sort_keys=False))
    for first in range(0, n, 500):
        docs: list[dict[str, Any]] = []
        for i in range(first, min(n, first + 500)):
            docs.append(cluster(i))
            docs.append({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "audit-webhook-backend", "namespace": f"cluster-bench{i:05d}"},
                         "stringData": {"webhook.yaml": KUBECONFIG}})
        (root / f"fleet-{first:05d}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


def review(obj: Any, kind: str, group: str, namespace: str, uid: str) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "operation": "CREATE", "namespace": namespace,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}, "object": obj}}).encode()


# What each measured case sends, and where: one apiserver Pod over and over (what kube-apiserver
# sends for the replicas of a ReplicaSet: a Pod has no name or uid yet at admission), a Cluster,
# and DISTINCT different apiserver Pods in turn (each of another ReplicaSet), which the webhook's
# memo of decided Pods (webhook/core/decide.py, InjectionMemo) holds too few of to remember:
# every one of those is decided afresh.
ENDPOINTS = {"mutate": "mutate", "validate": "validate", "mutate-distinct": "mutate"}
DISTINCT = 2048


def write_bodies(work: Path) -> dict[str, list[Path]]:
    """The review files of each case."""
    bodies = {"mutate": [work / "mutate.json"], "validate": [work / "validate.json"]}
    bodies["mutate"][0].write_bytes(review(POD, "Pod", "", "cluster-bench00000", "bench-mutate"))
    bodies["validate"][0].write_bytes(review(cluster(0), "Cluster", "kubermatic.k8c.io", "", "bench-validate"))
    distinct = work / "distinct"
    distinct.mkdir()
    bodies["mutate-distinct"] = []
    for i in range(DISTINCT):
        pod = copy.deepcopy(POD)
        pod["metadata"].setdefault("labels", {})["pod-template-hash"] = f"{i:010x}"
        path = distinct / f"{i}.json"
        path.write_bytes(review(pod, "Pod", "", "cluster-bench00000", f"bench-distinct-{i}"))
        bodies["mutate-distinct"].append(path)
    return bodies


def start(cmd: list[str], port: int, ca: Path, log: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    with log.open("ab") as out:
        proc = subprocess.Popen([*pin, *cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=out)
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 600  # 10,000 clusters load slowly on a busy machine
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost"):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    tail = log.read_text(errors="replace").splitlines()[-3:]
    raise RuntimeError(f"server did not start: {cmd}: " + " / ".join(tail))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass(frozen=True)
class Target:
    """One endpoint under load: the URL, the files holding the reviews it is sent (in turn), the server's pid."""

    url: str
    bodies: list[Path]
    pid: int


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attack(target: Target, work: Path, seconds: float, *, connections: int = 0, rate: float = 0.0
           ) -> dict[str, float]:
    """One vegeta run over keep-alive HTTP/1.1 TLS: closed loop over `connections` connections (each
    sends its next request once the last is answered), or open loop at `rate` requests per second.
    Latency is from the send to the whole answer; CPU is the server's, per request, which the
    machine's other load disturbs less than req/s."""
    targets = work / "targets.txt"
    targets.write_text("\n".join(f"POST {target.url}\nContent-Type: application/json\n@{body}\n"
                                 for body in target.bodies))
    cmd = [str(VEGETA), "attack", f"-targets={targets}", f"-root-certs={work / 'certs/ca.crt'}",
           f"-duration={seconds}s", "-timeout=30s", "-http2=false", "-keepalive=true"]
    if connections:
        cmd += ["-rate=0", f"-workers={connections}", f"-max-workers={connections}",
                f"-max-connections={connections}", f"-connections={connections}"]
    else:
        cmd += [f"-rate={rate:g}/1s", "-max-connections=64"]
    results = work / "results.bin"
    cpu = cpu_seconds(target.pid)
    with results.open("wb") as out:
        subprocess.run(cmd, stdout=out, check=True)
    cpu = cpu_seconds(target.pid) - cpu
    report = json.loads(subprocess.run([str(VEGETA), "report", "-type=json", str(results)], check=True,
                                       capture_output=True).stdout)
    results.unlink()
    return {"rps": report["throughput"], "p50_ms": report["latencies"]["50th"] / 1e6,
            "p99_ms": report["latencies"]["99th"] / 1e6,
            "errors": report["requests"] - report["status_codes"].get("200", 0),
            "cpu_us": cpu / max(report["requests"], 1) * 1e6}


def latency(target: Target, work: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    return [attack(target, work, args.seconds, rate=args.rate) for _ in range(args.runs)]


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {"p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs)}


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement, with its servers, certificates and stores in `work`."""
    certs = work / "certs"
    ensure_certs(certs, ServiceName())
    bodies = write_bodies(work)
    log = work / "webhook.log"
    results: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "runs": args.runs, "baseline": args.baseline,
                               "python": sys.version.split()[0],
                               "bytes": {name: paths[0].stat().st_size for name, paths in bodies.items()}}

    def webhook(n: int, root: Path = ROOT) -> tuple[subprocess.Popen[bytes], str]:
        store = work / f"store-{n}"
        if not store.exists():
            write_store(store, n)
        port = free_port()
        # As deployed: the default log level and decision log (one line per admission, to the log file).
        # `python -m webhook` from `root` runs that checkout's webhook.
        cmd = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--cert-dir", str(certs), "--source", str(store), "--reload-interval", "3600"]
        t0 = time.perf_counter()
        proc = start(cmd, port, certs / "ca.crt", log if root == ROOT else work / "baseline.log", cwd=root)
        if root != ROOT:
            return proc, f"https://127.0.0.1:{port}"
        results.setdefault("startup_s", {})[str(n)] = round(time.perf_counter() - t0, 2)
        rss = Path(f"/proc/{proc.pid}/status").read_text() if Path(f"/proc/{proc.pid}/status").exists() else ""
        for line in rss.splitlines():
            if line.startswith("VmRSS"):
                results.setdefault("rss_mib", {})[str(n)] = round(int(line.split()[1]) / 1024, 1)
        return proc, f"https://127.0.0.1:{port}"

    # 1. The webhook beside the bare endpoint, 10 clusters: both serve at once, their runs interleaved.
    proc, base = webhook(10)
    bare_port = free_port()
    bare = start([sys.executable, str(ROOT / "bench/bare.py"), str(bare_port), str(certs)], bare_port,
                 certs / "ca.crt", work / "bare.log")
    servers = {"bare": (f"https://127.0.0.1:{bare_port}", bare.pid), "webhook": (base, proc.pid)}
    procs = [proc, bare]
    if args.baseline:  # an earlier checkout's webhook, in the same interleaved runs
        baseline, baseline_url = webhook(10, Path(args.baseline).resolve())
        servers["baseline"] = (baseline_url, baseline.pid)
        procs.append(baseline)
    try:
        for name, body in bodies.items():  # warm up: connections, caches, the prepared settings
            for url, pid in servers.values():
                attack(Target(f"{url}/{ENDPOINTS[name]}", body, pid), work, 1.0, connections=16)
        throughput: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {
            name: {str(c): {label: [] for label in servers} for c in args.connections.split(",")} for name in bodies}
        for run in range(args.runs):
            for name, body in bodies.items():
                for conns, by_server in throughput[name].items():
                    order = list(servers.items())
                    for label, (url, pid) in order[run % len(order):] + order[:run % len(order)]:
                        got = attack(Target(f"{url}/{ENDPOINTS[name]}", body, pid), work, args.seconds,
                                     connections=int(conns))
                        if got["errors"]:
                            raise RuntimeError(f"{label} /{name}: {got['errors']:.0f} requests failed")
                        by_server[label].append(got)
        results["throughput"] = throughput
        results["latency"] = {name: {label: medians(latency(Target(f"{url}/{ENDPOINTS[name]}", body, pid), work,
                                                               args))
                                     for label, (url, pid) in servers.items() if label != "baseline"}
                              for name, body in bodies.items()}
    finally:
        for each in procs:
            stop(each)

    # 2. /mutate latency by fleet size.
    results["scale"] = {}
    for n in (int(x) for x in args.scale.split(",")):
        proc, base = webhook(n)
        try:
            body = work / "mutate-scale.json"
            body.write_bytes(review(POD, "Pod", "", f"cluster-bench{n - 1:05d}", "s"))
            results["scale"][str(n)] = medians(latency(Target(base + "/mutate", [body], proc.pid), work, args))
        finally:
            stop(proc)
    results["decision_log_lines"] = sum(1 for line in log.open() if "audit_webhook.decisions" in line)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0, help="open-loop request rate")
    p.add_argument("--connections", default="1,16", help="closed-loop connection counts")
    p.add_argument("--scale", default="10,1000,10000", help="cluster counts for the scale run")
    p.add_argument("--baseline", metavar="DIR", help="another checkout (git worktree add DIR REV) whose webhook "
                                                     "runs beside the others in the throughput runs: before/after")
    p.add_argument("--out", default=str(ROOT / "bench/results/latest.json"))
    args = p.parse_args()
    if args.quick:
        args.runs, args.seconds, args.scale = 1, 2.0, "10,1000"
    if not os.access(VEGETA, os.X_OK):
        print(f"bench: {VEGETA.relative_to(ROOT)} is missing: run `make bench` (or `bash bench/build.sh`)",
              file=sys.stderr)
        return 1

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load generator (a child: it inherits this) stays off the servers' core
    with tempfile.TemporaryDirectory(prefix="audit-webhook-bench-") as work:
        results = run_all(args, Path(work))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(report(results))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"audit-webhook benchmark: medians of {r['runs']} runs of {r['seconds']:.0f}s, server on one core, "
             f"vegeta on the other; /mutate body {r['bytes']['mutate']} bytes, /validate {r['bytes']['validate']}; "
             f"mutate-distinct: {DISTINCT} different Pods in turn, each decided afresh",
             "", "throughput, closed loop over keep-alive TLS connections, bare and webhook interleaved "
             "(decision log on)" + (f"; baseline: the webhook of {r['baseline']}" if r.get("baseline") else ""),
             f"{'case':<16} {'conns':>5} {'bare req/s':>11} {'webhook req/s':>14} {'ratio':>6}   "
             f"{'per run':<15} {'CPU us/req: bare':>16} {'webhook':>8} {'ratio':>6}"]
    for name, by_conns in r["throughput"].items():
        for conns, t in by_conns.items():
            bare, hook = (statistics.median(x["rps"] for x in t[k]) for k in ("bare", "webhook"))
            per_run = " ".join(f"{w['rps'] / b['rps']:.2f}" for b, w in zip(t["bare"], t["webhook"], strict=True))
            bare_cpu, hook_cpu = (statistics.median(x["cpu_us"] for x in t[k]) for k in ("bare", "webhook"))
            lines.append(f"{name:<16} {conns:>5} {bare:>11.0f} {hook:>14.0f} {hook / bare:>6.2f}   {per_run:<15} "
                         f"{bare_cpu:>16.0f} {hook_cpu:>8.0f} {bare_cpu / hook_cpu:>6.2f}")
            if "baseline" in t:
                before = statistics.median(x["rps"] for x in t["baseline"])
                before_cpu = statistics.median(x["cpu_us"] for x in t["baseline"])
                lines.append(f"{'  baseline':<22} {'':>11} {before:>14.0f} {before / bare:>6.2f}   {'':<15} {'':>16} "
                             f"{before_cpu:>8.0f} {bare_cpu / before_cpu:>6.2f}")
    lines += ["", f"latency, open loop at {r['rate']:.0f} req/s",
              f"{'case':<16} {'':<8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"]
    for name, by_server in r["latency"].items():
        for label in ("webhook", "bare"):
            m = by_server[label]
            lines.append(f"{name:<16} {label:<8} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['errors']:>7.0f}")
    lines += ["", f"{'clusters':>9} {'p50 ms':>8} {'p99 ms':>8} {'start s':>8} {'RSS MiB':>8}"]
    for n, m in r["scale"].items():
        lines.append(f"{n:>9} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {r['startup_s'].get(n, 0):>8.2f} "
                     f"{r['rss_mib'].get(n, 0):>8.1f}")
    lines += ["", f"decision log lines written by the webhook: {r['decision_log_lines']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
