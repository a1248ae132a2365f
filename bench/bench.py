"""Benchmark /mutate and /validate over TLS against a bare aiohttp endpoint, and /mutate at fleet scale.

    make bench                 # full run (a few minutes)
    make bench ARGS=--quick    # a short smoke run

Each server runs in its own process pinned to CPU 0 (one core, as the targets say); the load
generator runs on CPU 1. Latency is measured open-loop at a fixed rate (requests are sent on a
schedule whether or not earlier ones have answered, so queueing shows up in the tail); throughput
closed-loop with a fixed number of keep-alive connections. Every figure is the median of --runs runs.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    root.mkdir(parents=True, exist_ok=True)
    docs: list[dict[str, Any]] = [{"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
                                   "metadata": {"name": "s", "namespace": "kubermatic"},
                                   "spec": {"datacenters": {"dc1": {"spec": {}}}}}]
    for i in range(n):
        docs.append(cluster(i))
        docs.append({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "audit-webhook-backend", "namespace": f"cluster-bench{i:05d}"},
                     "stringData": {"webhook.yaml": KUBECONFIG}})
    (root / "fleet.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


def review(obj: Any, kind: str, group: str, namespace: str, uid: str) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "operation": "CREATE", "namespace": namespace,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}, "object": obj}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, ca: Path) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    proc = subprocess.Popen([*pin, *cmd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost"):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {cmd}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(url: str, body: bytes, ctx: ssl.SSLContext, rate: float, seconds: float) -> dict[str, float]:
    """Send `rate` requests per second on a schedule; latency from scheduled send to answer."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

        for _ in range(20):  # warm the connections
            await one()
        latencies.clear()
        tasks = []
        begin = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return {"p50_ms": pct(latencies, 0.50) * 1000, "p99_ms": pct(latencies, 0.99) * 1000, "errors": errors}


async def closed_loop(url: str, body: bytes, ctx: ssl.SSLContext, concurrency: int, seconds: float) -> float:
    """Requests per second with `concurrency` keep-alive connections always busy."""
    done = 0
    connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                done += 1

        start_t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start_t)


def measure(url: str, body: bytes, ctx: ssl.SSLContext, args: argparse.Namespace) -> dict[str, float]:
    runs = [asyncio.run(open_loop(url, body, ctx, args.rate, args.seconds)) for _ in range(args.runs)]
    rps = [asyncio.run(closed_loop(url, body, ctx, args.concurrency, args.seconds)) for _ in range(args.runs)]
    return {"p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "rps": statistics.median(rps)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0, help="open-loop request rate")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop connections")
    p.add_argument("--scale", default="10,1000,10000", help="cluster counts for the scale run")
    p.add_argument("--out", default=str(ROOT / "bench/results/latest.json"))
    args = p.parse_args()
    if args.quick:
        args.runs, args.seconds, args.scale = 1, 2.0, "10,1000"

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load generator stays off the server's core
    work = Path(tempfile.mkdtemp(prefix="audit-webhook-bench-"))
    certs = work / "certs"
    ensure_certs(certs, ServiceName())
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    mutate_body = review(POD, "Pod", "", "cluster-bench00000", "bench-mutate")
    validate_body = review(cluster(0), "Cluster", "kubermatic.k8c.io", "", "bench-validate")
    results: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "runs": args.runs,
                               "concurrency": args.concurrency, "python": sys.version.split()[0]}

    def webhook(n: int) -> tuple[subprocess.Popen[bytes], str]:
        store = work / f"store-{n}"
        if not store.exists():
            write_store(store, n)
        port = free_port()
        cmd = [sys.executable, "-m", "webhook", "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--cert-dir", str(certs), "--source", str(store), "--decision-log", "off",
               "--reload-interval", "3600"]
        t0 = time.perf_counter()
        proc = start(cmd, port, certs / "ca.crt")
        results.setdefault("startup_s", {})[str(n)] = round(time.perf_counter() - t0, 2)
        rss = Path(f"/proc/{proc.pid}/status").read_text() if Path(f"/proc/{proc.pid}/status").exists() else ""
        for line in rss.splitlines():
            if line.startswith("VmRSS"):
                results.setdefault("rss_mib", {})[str(n)] = round(int(line.split()[1]) / 1024, 1)
        return proc, f"https://127.0.0.1:{port}"

    # 1. Handler vs bare endpoint, 10 clusters.
    proc, base = webhook(10)
    try:
        results["mutate"] = measure(base + "/mutate", mutate_body, ctx, args)
        results["validate"] = measure(base + "/validate", validate_body, ctx, args)
    finally:
        stop(proc)
    port = free_port()
    bare = start([sys.executable, str(ROOT / "bench/bare.py"), str(port), str(certs)], port, certs / "ca.crt")
    try:
        results["bare_mutate"] = measure(f"https://127.0.0.1:{port}/mutate", mutate_body, ctx, args)
        results["bare_validate"] = measure(f"https://127.0.0.1:{port}/validate", validate_body, ctx, args)
    finally:
        stop(bare)

    # 2. /mutate latency by fleet size.
    results["scale"] = {}
    for n in (int(x) for x in args.scale.split(",")):
        proc, base = webhook(n)
        try:
            ns = f"cluster-bench{n - 1:05d}"
            runs = [asyncio.run(open_loop(base + "/mutate", review(POD, "Pod", "", ns, "s"), ctx, args.rate,
                                          args.seconds)) for _ in range(args.runs)]
            results["scale"][str(n)] = {"p50_ms": statistics.median(r["p50_ms"] for r in runs),
                                        "p99_ms": statistics.median(r["p99_ms"] for r in runs)}
        finally:
            stop(proc)
    shutil.rmtree(work, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(report(results))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"audit-webhook benchmark: medians of {r['runs']} runs of {r['seconds']:.0f}s, open loop at "
             f"{r['rate']:.0f} req/s, closed loop with {r['concurrency']} connections, server on one core",
             "", f"{'endpoint':<10} {'':<8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}"]
    for name in ("mutate", "validate"):
        for label, key in (("webhook", name), ("bare", f"bare_{name}")):
            m = r[key]
            lines.append(f"/{name:<9} {label:<8} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['rps']:>8.0f} "
                         f"{m['errors']:>7}")
        w, b = r[name], r[f"bare_{name}"]
        lines.append(f"/{name:<9} {'ratio':<8} {w['p50_ms'] / b['p50_ms']:>8.2f} {w['p99_ms'] / b['p99_ms']:>8.2f} "
                     f"{b['rps'] / w['rps']:>8.2f}   (webhook / bare; req/s as bare / webhook)")
    lines += ["", f"{'clusters':>9} {'p50 ms':>8} {'p99 ms':>8} {'start s':>8} {'RSS MiB':>8}"]
    for n, m in r["scale"].items():
        lines.append(f"{n:>9} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {r['startup_s'].get(n, 0):>8.2f} "
                     f"{r['rss_mib'].get(n, 0):>8.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
