"""The floor: a bare aiohttp endpoint over the same TLS that parses a review and echoes an answer.

Run by bench/bench.py; `python bench/bare.py PORT CERT_DIR`.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    review = json.loads(await request.read())
    answer = {"apiVersion": review["apiVersion"], "kind": "AdmissionReview",
              "response": {"uid": review["request"]["uid"], "allowed": True}}
    return web.Response(body=json.dumps(answer), content_type="application/json")


def main() -> None:
    port, cert_dir = int(sys.argv[1]), Path(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = web.Application(client_max_size=7 * 1024 * 1024)
    app.router.add_post("/mutate", echo)
    app.router.add_post("/validate", echo)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, access_log=None, print=None)


if __name__ == "__main__":
    main()
