"""The HTTPS edge: routes, body limits, error containment, metrics, certificate and store reloads."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import inspect
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.http_exceptions
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from webhook.adapters import handlers
from webhook.adapters.certs import CertWatcher, expiry_timestamp
from webhook.adapters.config_file import ConfigFile
from webhook.adapters.decision_log import log_decision
from webhook.adapters.metrics import CONTENT_TYPE, KINDS, OPERATIONS, Metrics, bounded
from webhook.adapters.store import Store
from webhook.core.decide import InjectionMemo, PreparedCache
from webhook.core.options import Options
from webhook.core.review import AdmissionRequest, Answer, ReviewError, encode_review, parse_review

log = logging.getLogger(__name__)

MAX_BODY = 7 * 1024 * 1024  # kube-apiserver sends at most ~3 MiB objects; twice that plus envelope
Handler = Callable[[AdmissionRequest], Awaitable[Answer]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status)


@dataclass
class Webhook:
    """Everything a running server needs; `app()` builds the aiohttp application."""

    store: Store
    options: Options
    metrics: Metrics
    cache: PreparedCache = field(default_factory=PreparedCache)
    # The replicas of one ReplicaSet are one Pod to admission: decided once (InjectionMemo).
    memo: InjectionMemo = field(default_factory=InjectionMemo)
    # The operator's configuration file (reloaded beside the certificates).
    config: ConfigFile = field(default_factory=lambda: ConfigFile(None))
    # With mutual TLS: the client certificate names (subject CN or DNS SAN) allowed to call the
    # admission paths and /metrics. Empty: any certificate the client CA signed.
    allowed_clients: frozenset[str] = frozenset()
    # Seconds a client may take to send its body: kube-apiserver sends a review at once, and a
    # slow sender must not hold the request (and its memory) forever.
    body_timeout: float = 10.0
    # Connections with a request in progress: the others may be closed to make room (see BoundedSite).
    busy: set[Any] = field(default_factory=set)
    # Connections that have sent a request: closed to make room only after those that never did.
    served: set[Any] = field(default_factory=set)
    # Set on SIGTERM: every answer from then on closes its connection, so that the client's next
    # request opens a new one, to a replica that stays.
    draining: bool = False
    # A port of its own for /metrics (plain HTTP), or None: /metrics on the HTTPS port, behind the
    # client-certificate pin like the admission paths.
    metrics_port: int | None = None

    async def _review(self, request: web.Request, name: str, handler: Handler) -> web.Response:
        refused = self._refused_client(request)
        if refused is not None:
            return refused
        # A connection with a request in progress is never the one closed to make room (BoundedSite),
        # and one that has sent a request is closed only after those that never did.
        self.busy.add(request.protocol)
        self.served.add(request.protocol)
        try:
            return await self._answer(request, name, handler)
        finally:
            self.busy.discard(request.protocol)

    @web.middleware
    async def _close_when_draining(self, request: web.Request,
                                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                   ) -> web.StreamResponse:
        """Every answer of either app closes its connection once the server drains (see `draining`)."""
        response = await handler(request)
        if self.draining:
            response.force_close()
        return response

    async def _answer(self, request: web.Request, name: str, handler: Handler) -> web.Response:
        try:
            if request.content.is_eof():  # the whole body is in (kube-apiserver sends it at once): no wait
                body = await request.read()
            else:  # a deadline on this task, not wait_for's task of its own
                async with asyncio.timeout(self.body_timeout):
                    body = await request.read()
        except TimeoutError:
            self.metrics.bad_requests.labels("408").inc()
            return _error(408, f"request body not received within {self.body_timeout:g} s")
        except web.HTTPRequestEntityTooLarge:
            self.metrics.bad_requests.labels("413").inc()
            return _error(413, f"request body is larger than {MAX_BODY} bytes")
        except (RequestPayloadError, aiohttp.http_exceptions.HttpProcessingError, ValueError) as exc:
            # A body that cannot be decoded (a bad Content-Encoding, a broken chunk) is the client's error.
            self.metrics.bad_requests.labels("400").inc()
            return _error(400, f"request body cannot be read: {type(exc).__name__}")
        try:
            api_version, req = parse_review(body)
        except ReviewError as exc:
            self.metrics.bad_requests.labels("400").inc()
            return _error(400, str(exc))
        start = time.perf_counter()
        try:
            answer = await handler(req)
        except Exception:
            # One broken request must not take the others down: answer it, log it, go on.
            log.exception("%s handler failed on request %s", name, req.uid)
            self.metrics.errors.labels(name).inc()
            answer = Answer(False, f"audit-webhook: internal error while handling request {req.uid}; "
                                   "see the webhook's log", code=500, reason="error")
        elapsed = time.perf_counter() - start
        self._observe(name, req, answer, elapsed)
        return web.Response(body=encode_review(api_version, req.uid, answer), content_type="application/json")

    def _observe(self, name: str, req: AdmissionRequest, answer: Answer, elapsed: float) -> None:
        m = self.metrics
        m.answered(name, bounded(req.kind.kind, KINDS), bounded(req.operation, OPERATIONS),
                   "allowed" if answer.allowed else "denied", elapsed)
        if answer.patch:
            m.injections.inc()
        if not answer.allowed:
            m.rejected(name, answer.reason, answer.rules)
        m.warned(name, len(answer.warnings), answer.warning_rules)
        log_decision(name, req, answer, elapsed)

    async def mutate(self, request: web.Request) -> web.Response:
        """POST /mutate."""
        return await self._review(request, "mutate",
                                  lambda r: handlers.mutate(r, self.store, self.options, self.cache, self.memo))

    async def validate(self, request: web.Request) -> web.Response:
        """POST /validate."""
        return await self._review(request, "validate",
                                  lambda r: handlers.validate(r, self.store, self.options, self.cache,
                                                              self.config.current))

    async def healthz(self, _request: web.Request) -> web.Response:
        """GET /healthz: the process answers."""
        return web.Response(text="ok")

    async def readyz(self, _request: web.Request) -> web.Response:
        """GET /readyz: the store can answer admissions, and the server is not shutting down."""
        if self.draining:
            return web.Response(status=503, text="shutting down")
        if self.store.ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="store not ready")

    async def metrics_page(self, request: web.Request) -> web.Response:
        """GET /metrics in the Prometheus text format (behind the client pin on the HTTPS port)."""
        refused = self._refused_client(request) if self.metrics_port is None else None
        if refused is not None:
            return refused
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def _refused_client(self, request: web.Request) -> web.Response | None:
        """With pinned identities, a 403 for any other client certificate (the probes stay open)."""
        if not self.allowed_clients:
            return None
        names = client_names(request.transport.get_extra_info("peercert") if request.transport else None)
        if names & self.allowed_clients:
            return None
        self.metrics.bad_requests.labels("403").inc()
        return _error(403, "client certificate is not one of the identities allowed to call this webhook")

    def app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._close_when_draining])
        app.router.add_post("/mutate", self.mutate)
        app.router.add_post("/validate", self.validate)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self.metrics_port is None:
            app.router.add_get("/metrics", self.metrics_page)
        return app

    def metrics_app(self) -> web.Application:
        """/metrics alone, for its own plain-HTTP port (scraped like any other target; it holds no secret)."""
        app = web.Application(middlewares=[self._close_when_draining])
        app.router.add_get("/metrics", self.metrics_page)
        return app


def client_names(peercert: Any) -> set[str]:
    """The subject common names and DNS names of a verified peer certificate (`ssl`'s dict form)."""
    if not isinstance(peercert, dict):
        return set()
    names = {value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"}
    return names | {value for key, value in peercert.get("subjectAltName", ()) if key == "DNS"}


@dataclass(frozen=True)
class Limits:
    """How much of the server one client can hold.

    kube-apiserver keeps a few keep-alive connections and sends each review at once, so anything
    slower or idler than these is not kube-apiserver, and is closed before it can exhaust memory.
    """

    # At most this many connections, from accept (TLS handshake included) to close; past it, one
    # without a request in progress is dropped (see BoundedSite).
    max_connections: int = 512
    # Seconds to finish the TLS handshake.
    handshake_timeout: float = 10.0
    # Seconds a connection may sit without a complete request line and headers (before its first
    # request, or between two): aiohttp's keep-alive timer covers both.
    idle_timeout: float = 30.0


class _TLSConnection(asyncio.sslproto.SSLProtocol):
    """One TLS connection, known to its site from accept to close.

    asyncio's own gives every connection a 256 KiB read buffer from the moment it is accepted:
    2,000 idle connections held 500 MiB. TLS records carry at most 16 KiB, so 32 KiB is plenty.
    """

    max_size = 32 * 1024

    def __init__(self, site: BoundedSite, app: Any, context: ssl.SSLContext, limits: Limits) -> None:
        super().__init__(asyncio.get_running_loop(), app, context, None, server_side=True,
                         ssl_handshake_timeout=limits.handshake_timeout, ssl_shutdown_timeout=5.0)
        self.site, self.app = site, app
        self.raw: asyncio.BaseTransport | None = None
        # When the client last sent bytes: a connection quiet for a while is not about to carry a request.
        self.last_read = asyncio.get_running_loop().time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        self.site.live[self] = None
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.site.forget(self)
        super().connection_lost(exc)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_read = asyncio.get_running_loop().time()
        super().buffer_updated(nbytes)


class BoundedSite(web.TCPSite):
    """An HTTPS site with `Limits`. Each new connection past the cap drops an idle one: the oldest
    that never sent a request, else the oldest without a request in progress. Idle, half-sent or
    handshaking connections can then neither exhaust memory nor lock kube-apiserver out, nor push
    its keep-alive connections out."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, ssl_context: ssl.SSLContext,
                 limits: Limits, busy: set[Any], served: set[Any]) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=512)
        self.limits, self.busy, self.served = limits, busy, served
        self.live: dict[_TLSConnection, None] = {}  # in accept order

    def forget(self, conn: _TLSConnection) -> None:
        self.live.pop(conn, None)
        self.served.discard(conn.app)

    def stop_accepting(self) -> None:
        """Close the listening socket; the connections already open stay."""
        if self._server is not None:
            self._server.close()

    def close_quiet(self, quiet: float) -> bool:
        """Close the connections without a request in progress whose client has sent nothing for
        `quiet` seconds; whether any connection is left open."""
        now = asyncio.get_running_loop().time()
        for c in list(self.live):
            # aiohttp's own marks cover a request whose headers are in but whose handler has not started.
            started = c.app in self.busy or getattr(c.app, "_request_in_progress", False) \
                or getattr(c.app, "_messages", None)
            if not started and now - c.last_read >= quiet:
                self.forget(c)
                c.app.force_close()
        return bool(self.live)

    def _make_room(self) -> None:
        idle = [c for c in self.live if c.app not in self.busy]
        victim = next((c for c in idle if c.app not in self.served), None) or next(iter(idle), None)
        if victim is not None and victim.raw is not None:
            self.forget(victim)
            victim.raw.abort()  # no TLS goodbye: its buffers go now

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None and self._ssl_context is not None
        context = self._ssl_context

        def connection() -> _TLSConnection:
            if len(self.live) >= self.limits.max_connections:
                self._make_room()
            return _TLSConnection(self, server(), context, self.limits)

        self._server = await asyncio.get_running_loop().create_server(connection, self._host, self._port,
                                                                      backlog=self._backlog)


Poller = Callable[[], object]


async def _poll_forever(interval: float, pollers: list[Poller]) -> None:
    while True:
        await asyncio.sleep(interval)
        for poll in pollers:
            try:
                result = poll()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("background refresh failed")


class ListenError(Exception):
    """A port that cannot be listened on (taken, or an address not of this machine), with the flag that set it."""

    def __init__(self, flag: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"{flag}: cannot listen on {host}:{port}: {reason}")


async def _listen(site: web.BaseSite, flag: str, host: str, port: int) -> None:
    try:
        await site.start()
    except OSError as exc:
        # aiohttp's strerror repeats the address; the errno's own text is what the operator needs.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(flag, host, port, reason) from None


# Seconds a connection must have been quiet before the drain closes it. kube-apiserver (Go) does not
# send a POST again once it has written it, and reuses its most recently used connection first: the
# one it is about to write on has carried a request moments ago, and is answered with
# `Connection: close` instead.
DRAIN_QUIET_S = 1.0


async def _drain(site: BoundedSite, webhook: Webhook, timeout: float) -> None:
    """Stop accepting connections and let the open ones end, for at most `timeout` seconds.

    aiohttp's own shutdown stops reading every connection at once: a request whose body was still
    arriving would hang until the client gave up, and one written on an idle keep-alive connection
    would be lost, and the Pod refused. So first every answer closes its connection
    (`Webhook.draining`), a connection quiet for `DRAIN_QUIET_S` is closed, and the others are read
    and answered as usual until they are gone.
    """
    site.stop_accepting()
    webhook.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while site.close_quiet(DRAIN_QUIET_S) and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def serve(webhook: Webhook, *, host: str, port: int, cert_dir: Path, poll_interval: float = 2.0,
                shutdown_timeout: float = 20.0, started: Callable[[int], None] | None = None,
                pollers: list[Poller] | None = None, client_ca: Path | None = None,
                limits: Limits | None = None, metrics_host: str = "0.0.0.0") -> None:
    """Serve HTTPS until SIGTERM or SIGINT, then finish requests in flight and stop.

    `pollers` run every `poll_interval` seconds beside the certificate and source reloads;
    they may be coroutine functions.
    """
    watcher = CertWatcher(cert_dir, client_ca)
    webhook.metrics.store.watch(webhook.store)

    webhook.metrics.cert_expiry.set(expiry_timestamp(cert_dir))

    def refresh_cert() -> None:
        if watcher.poll():
            webhook.metrics.cert_expiry.set(expiry_timestamp(cert_dir))

    all_pollers: list[Poller] = [refresh_cert, webhook.config.poll, *(pollers or [])]
    store_refresh = getattr(webhook.store, "refresh", None)
    if callable(store_refresh):
        all_pollers.append(store_refresh)

    # Signal handlers first: a SIGTERM that arrives while we start up must still stop us cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    limits = limits or Limits()
    # The drain below has waited for the requests in flight already: what is left when aiohttp shuts the
    # connections down is idle, or stuck past the drain's deadline.
    runner = web.AppRunner(webhook.app(), handle_signals=False, shutdown_timeout=2.0,
                           access_log=None, keepalive_timeout=limits.idle_timeout)
    await runner.setup()
    site = BoundedSite(runner, host, port, ssl_context=watcher.listening, limits=limits, busy=webhook.busy,
                       served=webhook.served)
    await _listen(site, "--port", host, port)
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("audit-webhook listening on https://%s:%d", host, bound)
    metrics_runner = None
    if webhook.metrics_port is not None:
        # Plain HTTP, reachable only from the scraping namespace (deploy/'s NetworkPolicy).
        metrics_runner = web.AppRunner(webhook.metrics_app(), handle_signals=False, access_log=None,
                                       keepalive_timeout=limits.idle_timeout, shutdown_timeout=2.0)
        await metrics_runner.setup()
        await _listen(web.TCPSite(metrics_runner, metrics_host, webhook.metrics_port), "--metrics-port",
                      metrics_host, webhook.metrics_port)
        log.info("metrics on http://%s:%d/metrics", metrics_host, webhook.metrics_port)
    if started:
        started(bound)

    poller = asyncio.create_task(_poll_forever(poll_interval, all_pollers))
    try:
        await stop.wait()
        log.info("shutting down: no new connections, finishing requests in flight")
        await _drain(site, webhook, shutdown_timeout)
    finally:
        poller.cancel()
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        # Only now: a second SIGTERM while the connections close must not kill the process.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
