"""Per-request CPU of the handler, piece by piece, against the cost of parsing the request.

    make bench-core                     # or: .venv/bin/python bench/core.py [--rounds 15 --calls 1000]

Five requests: the short example apiserver Pod (examples/pods/apiserver.yaml) and a full-size one
as kube-apiserver admits it (examples/pods/apiserver-admitted.yaml) for /mutate; the bench's Cluster
(CREATE), and a full-size KKP Cluster with its status (bench/data/cluster-kkp.yaml) as a CREATE and
as an UPDATE with the old object, for /validate. For each, in microseconds per call:

  parse     json + pydantic, exactly as the server parses a review body
  decision  the pure core: mutation (cached per-cluster settings, as served) or validation
  answer    the AdmissionReview answer encoded to bytes
  handler   the whole handler in process (body read, parse, store lookup, decision, metrics,
            decision log line, answer) without HTTP and TLS; its `request` is a stand-in with only
            the body; log lines go to /dev/null. The same Pod over and over is answered from the
            memo of decided Pods (InjectionMemo), as the replicas of a ReplicaSet are
  fresh     the same, with that memo off: every Pod decided afresh (a Pod of another ReplicaSet)
  floor     bench/bare.py's echo handler on the same body, the same way

Every row is timed in interleaved rounds (--rounds of --calls calls each) so that the VM's
drift hits all rows alike; the table shows medians over the rounds, and decision/parse is the
median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bare  # noqa: E402
import yaml  # noqa: E402

from bench import KUBECONFIG, POD, cluster, review  # noqa: E402
from webhook.adapters import logs  # noqa: E402
from webhook.adapters.metrics import Metrics  # noqa: E402
from webhook.adapters.server import Webhook  # noqa: E402
from webhook.adapters.store import MemoryStore  # noqa: E402
from webhook.core.decide import InjectionMemo  # noqa: E402
from webhook.core.mutation import decide_mutation, prepare  # noqa: E402
from webhook.core.options import Options  # noqa: E402
from webhook.core.review import Answer, encode_review, parse_review  # noqa: E402
from webhook.core.snapshot import Snapshot  # noqa: E402
from webhook.core.validation.admission import check_admission  # noqa: E402
from webhook.core.validation.context import Context  # noqa: E402

FULL_POD = yaml.safe_load((ROOT / "examples/pods/apiserver-admitted.yaml").read_text())
FULL_CLUSTER = yaml.safe_load((ROOT / "bench/data/cluster-kkp.yaml").read_text())


class Content:
    """Stands in for the request's body stream: the whole body is in."""

    def is_eof(self) -> bool:
        return True


class Request:
    """Stands in for aiohttp's request: the handlers read the body and mark the connection busy."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.content = Content()
        self.protocol = object()  # the connection, for the busy and served sets

    async def read(self) -> bytes:
        return self.body


def update_review(obj: dict[str, Any], uid: str) -> bytes:
    """An UPDATE of `obj` whose old object differs only in status, as KKP's controllers send them."""
    old = copy.deepcopy(obj)
    old["status"]["conditions"]["ClusterControllerReconciledSuccessfully"]["lastHeartbeatTime"] = "2026-11-29T14:04:44Z"
    doc = json.loads(review(obj, "Cluster", "kubermatic.k8c.io", "", uid))
    doc["request"].update(operation="UPDATE", oldObject=old)
    return json.dumps(doc).encode()


def cases() -> list[tuple[str, str, bytes]]:
    """(name, endpoint, body) of each measured request."""
    return [
        ("Pod, short example", "mutate", review(POD, "Pod", "", "cluster-bench00000", "core-pod")),
        ("Pod, full size", "mutate", review(FULL_POD, "Pod", "", "cluster-bench00000", "core-pod-full")),
        ("Cluster CREATE, bench", "validate", review(cluster(0), "Cluster", "kubermatic.k8c.io", "", "core-c")),
        ("Cluster CREATE, full size", "validate",
         review(FULL_CLUSTER, "Cluster", "kubermatic.k8c.io", "", "core-c-full-create")),
        ("Cluster UPDATE, full size", "validate", update_review(FULL_CLUSTER, "core-c-full")),
    ]


def rows_for(endpoint: str, body: bytes, webhook: Webhook, fresh: Webhook, options: Options, snapshot: Snapshot
             ) -> dict[str, Callable[[], Any]]:
    """The timed calls for one request."""
    version, req = parse_review(body)
    loop = asyncio.new_event_loop()
    if endpoint == "mutate":
        owner = snapshot.clusters[req.namespace]
        prepared = prepare(owner, None, options)

        def decide() -> Any:
            return decide_mutation(req.operation, req.object, owner, None, options, prepared=prepared)
        handler, afresh = webhook.mutate, fresh.mutate
    else:
        secrets = dict(snapshot.secrets)

        def decide() -> Any:
            return check_admission(req.object, req.oldObject, Context(secrets=secrets))
        handler = afresh = webhook.validate
    decided = decide()
    answer = decided if isinstance(decided, Answer) else Answer(not decided.errors, warnings=decided.warnings)
    request = Request(body)
    return {
        "parse": lambda: parse_review(body),
        "decision": decide,
        "answer": lambda: encode_review(version, req.uid, answer),
        "handler": lambda: loop.run_until_complete(handler(request)),
        "fresh": lambda: loop.run_until_complete(afresh(request)),
        "floor": lambda: loop.run_until_complete(bare.echo(request)),
    }


def measure(rows: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per call of each row, one value per round; rows interleave within a round."""
    out: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out[name].append((time.perf_counter() - t0) / calls * 1e6)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=1000)
    args = p.parse_args()

    # As bench.py serves: the log level and the decision log at their defaults, the lines thrown away.
    logs.configure("INFO", "text")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    options = Options.default()
    snapshot = Snapshot()
    snapshot.add(cluster(0))
    for ns in ("cluster-bench00000", "cluster-x7k2p9qd4m"):
        snapshot.secrets[(ns, "audit-webhook-backend")] = {"webhook.yaml": KUBECONFIG.encode()}
    webhook = Webhook(MemoryStore(snapshot), options, Metrics())
    fresh = Webhook(MemoryStore(snapshot), options, Metrics(), memo=InjectionMemo(size=0))

    print(f"microseconds per call, medians of {args.rounds} interleaved rounds of {args.calls} calls")
    header = (f"{'request':<27} {'bytes':>6} {'parse':>7} {'decision':>9} {'answer':>7} {'handler':>8} {'fresh':>7} "
              f"{'floor':>7}")
    print(header + f" {'decision/parse':>15}")
    for name, endpoint, body in cases():
        t = measure(rows_for(endpoint, body, webhook, fresh, options, snapshot), args.rounds, args.calls)
        med = {k: statistics.median(v) for k, v in t.items()}
        ratio = statistics.median(d / q for d, q in zip(t["decision"], t["parse"], strict=True))
        print(f"{name:<27} {len(body):>6} {med['parse']:>7.1f} {med['decision']:>9.1f} {med['answer']:>7.1f} "
              f"{med['handler']:>8.1f} {med['fresh']:>7.1f} {med['floor']:>7.1f} {ratio:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
