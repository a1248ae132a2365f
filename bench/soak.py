"""Soak under faults: steady mixed /mutate and /validate load against `audit-webhook serve
--source kube` on a real kube-apiserver (the e2e control plane), while the certificate files are
replaced, kube-apiserver is restarted, the API is unreachable for a while, 2,000 idle and
half-sent connections are held open beside a flood of YAML alias bombs, and finally the webhook
gets SIGTERM. Loopback only, bounded in time.

    make soak                    # about 2 minutes
    make soak ARGS="--phase-seconds 30 --rate 200"

Reports, per phase: requests, failures a client would see, p50/p99 latency; and RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.cluster import ControlPlane, WebhookProcess, webhook_configurations  # noqa: E402
from webhook.adapters.certs import ServiceName, ensure_certs  # noqa: E402

POD = yaml.safe_load((ROOT / "examples/pods/apiserver.yaml").read_text())
CLUSTER = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "soak01"},
           "spec": {"cloud": {"dc": "hamburg"}, "auditLogging": {"enabled": True, "policyPreset": "minimal"}}}


def review(obj: Any, kind: str, group: str, namespace: str, uid: str) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind}, "operation": "CREATE",
        "namespace": namespace, "object": obj}}).encode()


def alias_bomb() -> str:
    """A 300-byte "billion laughs" audit policy: 387 million nodes once its aliases are expanded."""
    levels = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(levels) + "\n"


BOMB = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": "cluster-soak01"},
        "data": {"policy.yaml": alias_bomb()}}
# The Deployment's memory limit (server.resources in charts/audit-webhook/values.yaml).
MEMORY_LIMIT_MIB = 256


async def hold_connections(port: int, ctx: ssl.SSLContext, count: int) -> list[asyncio.StreamWriter]:
    """`count` TLS connections that send nothing, or only part of a request's headers."""
    async def one(i: int) -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        except (OSError, ssl.SSLError):
            return None
        if i % 2:
            writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n")
        return writer

    held: list[asyncio.StreamWriter] = []
    for start in range(0, count, 200):
        batch = await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
        held += [w for w in batch if w is not None]
    return held


async def bombard(url: str, ctx: ssl.SSLContext, stop: asyncio.Event, rate: float) -> dict[str, int]:
    """Alias bombs to /validate at `rate` per second; how they were answered."""
    body = review(BOMB, "ConfigMap", "", "cluster-soak01", "bomb")
    answers: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=8),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not stop.is_set():
            try:
                async with session.post(url + "/validate", data=body) as r:
                    answer = await r.json()
                    key = "refused" if r.status == 200 and not answer["response"]["allowed"] else f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                key = type(exc).__name__
            answers[key] = answers.get(key, 0) + 1
            await asyncio.sleep(1 / rate)
    return answers


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    """Open-loop load: `rate` requests/s alternating /mutate and /validate; results tagged by phase."""

    def __init__(self, url: str, ctx: ssl.SSLContext, rate: float) -> None:
        self.url, self.ctx, self.rate = url, ctx, rate
        self.phase = "baseline"
        self.results: list[tuple[str, bool, float]] = []
        self._stop = asyncio.Event()
        self.bodies = [("/mutate", review(POD, "Pod", "", "cluster-soak01", "m")),
                       ("/validate", review(CLUSTER, "Cluster", "kubermatic.k8c.io", "", "v"))]

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx, limit=32),
                                         timeout=timeout) as session:
            tasks = []
            i = 0
            start = time.perf_counter()
            while not self._stop.is_set():
                delay = start + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                path, body = self.bodies[i % 2]
                tasks.append(asyncio.create_task(self._one(session, path, body, self.phase)))
                i += 1
            await asyncio.gather(*tasks)

    async def _one(self, session: aiohttp.ClientSession, path: str, body: bytes, phase: str) -> None:
        t0 = time.perf_counter()
        ok = False
        try:
            async with session.post(self.url + path, data=body) as r:
                answer = await r.json()
                ok = r.status == 200 and answer["response"]["allowed"] is True
        except (aiohttp.ClientError, TimeoutError, ValueError):
            ok = False
        self.results.append((phase, ok, time.perf_counter() - t0))

    def stop(self) -> None:
        self._stop.set()


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="audit-webhook-soak-"))
    plane = ControlPlane(work)
    plane.start()
    plane.kubectl("apply", "-k", str(ROOT / "deploy/crds"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io")
    plane.kubectl("create", "namespace", "cluster-soak01")
    plane.apply(CLUSTER)
    cert_dir = work / "webhook-certs"
    ensure_certs(cert_dir, ServiceName())
    hook = WebhookProcess(plane, cert_dir, extra=("--decision-log", "off"))
    plane.apply(*webhook_configurations(hook.port))
    hook.start()
    assert hook.proc is not None
    rss_start = rss_mib(hook.proc.pid)
    load = Load(f"https://127.0.0.1:{hook.port}", plane.client_context(cert_dir / "ca.crt"), args.rate)
    runner = asyncio.create_task(load.run())
    step = args.phase_seconds

    await asyncio.sleep(step)
    load.phase = "certificate replaced x3"
    for _ in range(3):
        await asyncio.to_thread(ensure_certs, cert_dir, ServiceName(), renew=True)
        await asyncio.sleep(step / 3)
    load.phase = "kube-apiserver restarted"
    argv = plane.pause("kube-apiserver")
    await asyncio.to_thread(plane.resume, "kube-apiserver", argv)
    await asyncio.sleep(step)
    load.phase = "API unreachable"
    argv = plane.pause("kube-apiserver")
    await asyncio.sleep(step)
    await asyncio.to_thread(plane.resume, "kube-apiserver", argv)
    load.phase = "API back"
    await asyncio.sleep(step)
    load.phase = f"{args.idle_connections:,} idle conns + alias bombs"
    stop_bombs = asyncio.Event()
    bombs = asyncio.create_task(bombard(load.url, load.ctx, stop_bombs, args.bomb_rate))
    held = await hold_connections(hook.port, load.ctx, args.idle_connections)
    peak = rss_mib(hook.proc.pid)
    until = time.monotonic() + step
    while time.monotonic() < until:
        peak = max(peak, rss_mib(hook.proc.pid))
        await asyncio.sleep(0.25)
    stop_bombs.set()
    bomb_answers = await bombs
    for writer in held:
        writer.close()
    load.phase = "after the flood"
    await asyncio.sleep(step)
    rss_end = rss_mib(hook.proc.pid)
    load.phase = "SIGTERM (planned restart window)"
    hook.proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(hook.proc.wait, 30)
    await asyncio.sleep(1)
    load.stop()
    await runner
    plane.stop()

    phases: dict[str, Any] = {}
    for phase in dict.fromkeys(p for p, _, _ in load.results):
        rows = [(ok, t) for p, ok, t in load.results if p == phase]
        latencies = sorted(t for _, t in rows)
        phases[phase] = {"requests": len(rows), "failed": sum(not ok for ok, _ in rows),
                         "p50_ms": round(statistics.median(latencies) * 1000, 2),
                         "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 2)}
    return {"rate": args.rate, "phase_seconds": step, "phases": phases, "rss_start_mib": round(rss_start, 1),
            "rss_end_mib": round(rss_end, 1), "webhook_exit_code": exit_code, "work": str(work),
            "flood": {"connections_held": len(held), "bombs": bomb_answers, "rss_peak_mib": round(peak, 1),
                      "memory_limit_mib": MEMORY_LIMIT_MIB}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second, half /mutate, half /validate")
    p.add_argument("--phase-seconds", type=float, default=15.0)
    p.add_argument("--idle-connections", type=int, default=2000, help="connections held open in the flood phase")
    p.add_argument("--bomb-rate", type=float, default=20.0, help="alias bombs per second in the flood phase")
    p.add_argument("--out", default=str(ROOT / "bench/results/soak.json"))
    args = p.parse_args()
    result = asyncio.run(soak(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"soak at {args.rate:.0f} req/s, {args.phase_seconds:.0f} s per phase")
    print(f"{'phase':<34} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for phase, m in result["phases"].items():
        print(f"{phase:<34} {m['requests']:>9} {m['failed']:>7} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
    flood = result["flood"]
    print(f"flood: {flood['connections_held']} connections held, alias bombs answered {flood['bombs']}, "
          f"peak RSS {flood['rss_peak_mib']} MiB (limit {flood['memory_limit_mib']} MiB)")
    print(f"RSS {result['rss_start_mib']} MiB -> {result['rss_end_mib']} MiB; webhook exit code "
          f"{result['webhook_exit_code']} after SIGTERM")
    failed_before_stop = sum(m["failed"] for ph, m in result["phases"].items() if not ph.startswith("SIGTERM"))
    over_limit = flood["rss_peak_mib"] >= flood["memory_limit_mib"]
    return 1 if failed_before_stop or over_limit or result["webhook_exit_code"] != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
