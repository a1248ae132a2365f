"""Cost of the pure decision core against the cost of parsing the request it decides on.

    .venv/bin/python bench/core.py

Medians of 7 timings of N calls each, in microseconds per call, for the bench's KKP apiserver
Pod and Cluster: parsing the review (json + pydantic), the mutation decision (validated, cached
settings, as the server runs it), the validation decision, and rendering the answer.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import POD, cluster, review  # noqa: E402
from webhook.mutation import decide_mutation, prepare  # noqa: E402
from webhook.options import Options  # noqa: E402
from webhook.review import parse_review, to_review  # noqa: E402
from webhook.validation.admission import check_admission  # noqa: E402


def per_call_us(fn, n: int = 2000) -> float:
    return statistics.median(timeit.repeat(fn, number=n, repeat=7)) / n * 1e6


def main() -> int:
    options = Options.default()
    c = cluster(0)
    body = review(POD, "Pod", "", "cluster-bench00000", "x")
    version, req = parse_review(body)
    prepared = prepare(c, None, options)
    answer = decide_mutation("CREATE", req.object, c, None, options, prepared=prepared)
    secrets = {("cluster-bench00000", "audit-webhook-backend"): {"webhook.yaml": b"apiVersion: v1\nkind: Config\n"
               b"current-context: s\ncontexts: [{name: s, context: {cluster: s}}]\n"
               b"clusters: [{name: s, cluster: {server: 'https://sink.example'}}]\n"}}
    rows = [
        ("parse review (json + pydantic)", lambda: parse_review(body)),
        ("json.loads alone", lambda: json.loads(body)),
        ("mutation decision (cached settings)", lambda: decide_mutation("CREATE", req.object, c, None, options,
                                                                        prepared=prepared)),
        ("validation decision (Cluster)", lambda: check_admission(c, None, seed=None, secrets=secrets)),
        ("answer (to_review + json.dumps)", lambda: json.dumps(to_review(version, "x", answer))),
    ]
    for name, fn in rows:
        print(f"{name:<40} {per_call_us(fn):8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
