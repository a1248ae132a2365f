"""`audit-webhook serve` as a real process: certificates, rotation, signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.helpers import EXAMPLES, ROOT, kkp_pod, review
from tests.ports import free_port
from webhook.adapters.certs import ServiceName, ensure_certs


class Serve:
    """A running `python -m webhook serve` on a free port."""

    def __init__(self, cert_dir: Path, *extra: str) -> None:
        self.cert_dir = cert_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", "0", "--cert-dir",
             str(cert_dir), "--source", str(EXAMPLES), "--reload-interval", "0.1", *extra],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = re.search(r"listening on https://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                # Keep reading: a full pipe would block the server's logging, and the server.
                self._reader = threading.Thread(target=self._drain, daemon=True)
                self._reader.start()
                return
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


def peer_serial(port: int, cafile: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="audit-webhook.audit-webhook.svc") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


@pytest.fixture
def server(tmp_path):
    s = Serve(tmp_path / "certs")
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_serve_creates_certificates_for_the_service_names(server):
    cert = x509.load_pem_x509_certificate((server.cert_dir / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) >= {
        "localhost", "audit-webhook", "audit-webhook.audit-webhook", "audit-webhook.audit-webhook.svc",
        "audit-webhook.audit-webhook.svc.cluster.local"}
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert oct((server.cert_dir / "tls.key").stat().st_mode & 0o777) == "0o600"
    # The service name verifies against the CA it made (SAN, not CN).
    assert peer_serial(server.port, server.cert_dir / "ca.crt") == cert.serial_number


async def test_replaced_certificates_are_served_without_restart_or_failed_requests(server):
    ca = server.cert_dir / "ca.crt"
    before = peer_serial(server.port, ca)
    url = f"https://127.0.0.1:{server.port}/mutate"
    body = json.dumps(review(kkp_pod(), namespace="cluster-auditon01")).encode()
    tls = ssl.create_default_context(cafile=str(ca))
    failures: list[str] = []
    answered = 0

    async def hammer(session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                async with session.post(url, data=body) as r:
                    answered += 1
                    if r.status != 200 or not (await r.json())["response"]["allowed"]:
                        failures.append(f"status {r.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(repr(exc))

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), timeout=timeout) as keep, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, force_close=True), timeout=timeout) as fresh:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(hammer(s, stop)) for s in (keep, keep, fresh, fresh)]
        await asyncio.sleep(0.3)
        for _ in range(3):
            await asyncio.to_thread(ensure_certs, server.cert_dir, ServiceName(), renew=True)
            await asyncio.sleep(0.4)
        stop.set()
        await asyncio.gather(*tasks)
    after = peer_serial(server.port, ca)
    current = x509.load_pem_x509_certificate((server.cert_dir / "tls.crt").read_bytes()).serial_number
    assert before != after == current
    assert failures == []
    assert answered > 20
    assert server.proc.poll() is None


def test_sigterm_stops_cleanly(server):
    assert server.stop() == 0
    assert any("shutting down" in line for line in server.log)


async def test_a_request_in_flight_at_sigterm_is_answered_and_keep_alive_ends(tmp_path):
    """SIGTERM while kube-apiserver is sending a review (its headers in, its body still on the way):
    the body is still read and the review answered, with `Connection: close` so that the client's
    next request goes to another replica; then the process exits 0. kube-apiserver does not retry a
    POST it has written, so a dropped one would be a refused Pod."""
    s = Serve(tmp_path / "certs")
    body = json.dumps(review(kkp_pod(), namespace="cluster-auditon01")).encode()
    reader, writer = await _hold(s.port, s.cert_dir / "ca.crt", b"")
    try:
        head = (f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body[:100])
        await writer.drain()
        await asyncio.sleep(0.5)  # the handler is reading the body
        s.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # the server is shutting down
        writer.write(body[100:])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
        status, _, rest = response.partition(b"\r\n")
        headers, _, answer = rest.partition(b"\r\n\r\n")
        assert status == b"HTTP/1.1 200 OK", response[:300]
        assert b"connection: close" in headers.lower()
        assert json.loads(answer)["response"]["allowed"] is True
        assert s.proc.wait(timeout=30) == 0
    finally:
        writer.close()
        if s.proc.poll() is None:
            s.stop()


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bytes]:
    """Status line, headers and body of one HTTP/1.1 response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, _, headers = head.partition(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, headers.lower(), await asyncio.wait_for(reader.readexactly(length), 10)


async def test_a_review_on_a_kept_alive_connection_after_sigterm_is_answered(tmp_path):
    """kube-apiserver keeps its connection to a replica open and writes its next review on it, even
    after the replica got SIGTERM (the Service only stops new connections). The review is answered,
    and that answer closes the connection; then the process exits 0."""
    s = Serve(tmp_path / "certs")
    body = json.dumps(review(kkp_pod(), namespace="cluster-auditon01")).encode()
    request = (f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await _hold(s.port, s.cert_dir / "ca.crt", request)
    probe = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    probe_reader, probe_writer = await _hold(s.port, s.cert_dir / "ca.crt", probe)
    try:
        status, headers, _ = await _response(reader)
        assert status == b"HTTP/1.1 200 OK" and b"connection: close" not in headers
        assert (await _response(probe_reader))[0] == b"HTTP/1.1 200 OK"
        s.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        writer.write(request)
        probe_writer.write(probe)
        await writer.drain()
        status, headers, answer = await _response(reader)
        assert status == b"HTTP/1.1 200 OK" and b"connection: close" in headers
        assert json.loads(answer)["response"]["allowed"] is True
        assert await asyncio.wait_for(reader.read(), 10) == b""
        # No longer ready: the kubelet takes the Pod out of the Service's endpoints, if it had not yet.
        status, headers, text = await _response(probe_reader)
        assert status == b"HTTP/1.1 503 Service Unavailable" and b"connection: close" in headers
        assert text == b"shutting down"
        assert s.proc.wait(timeout=30) == 0
    finally:
        writer.close()
        probe_writer.close()
        if s.proc.poll() is None:
            s.stop()


async def test_a_quiet_connection_is_closed_by_the_drain(tmp_path):
    """A keep-alive connection that sends nothing after SIGTERM is closed by the server (it does
    not hold the process until the idle timeout), and the process exits 0."""
    s = Serve(tmp_path / "certs", "--idle-timeout", "600")
    reader, writer = await _hold(s.port, s.cert_dir / "ca.crt", b"")
    try:
        s.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(reader.read(), 30) == b""
        assert s.proc.wait(timeout=30) == 0
    finally:
        writer.close()
        if s.proc.poll() is None:
            s.stop()


def test_existing_certificates_are_kept(tmp_path):
    cert_dir = tmp_path / "certs"
    ensure_certs(cert_dir, ServiceName())
    before = (cert_dir / "tls.crt").read_bytes()
    s = Serve(cert_dir)
    try:
        assert (cert_dir / "tls.crt").read_bytes() == before
    finally:
        assert s.stop() == 0


def test_a_broken_source_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--source", str(tmp_path), "--cert-dir",
                             str(tmp_path / "c"), "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert result.returncode == 2
    assert f"{tmp_path / 'bad.yaml'}: not valid YAML at line 2" in result.stderr


async def _hold(port: int, ca: Path, first_bytes: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.05) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


async def test_idle_and_half_sent_connections_never_lock_kube_apiserver_out(tmp_path):
    """More idle, header-less and half-sent connections than the cap: each new connection closes the
    oldest idle one, stalled headers are dropped after --idle-timeout, and admissions go on."""
    s = Serve(tmp_path / "certs", "--max-connections", "20", "--idle-timeout", "2")
    try:
        ca = s.cert_dir / "ca.crt"
        body = json.dumps(review(kkp_pod(), namespace="cluster-auditon01")).encode()
        tls = ssl.create_default_context(cafile=str(ca))
        # kube-apiserver's keep-alive connection, which has sent requests, is not the one made room with.
        opened = []
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(lambda *_: opened.append(1) or asyncio.sleep(0))
        keep = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=1), trace_configs=[trace])
        async with keep.post(f"https://127.0.0.1:{s.port}/mutate", data=body) as r:
            assert r.status == 200
        stalled = b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Ty"
        held = [await _hold(s.port, ca, b"" if i % 2 else stalled) for i in range(60)]
        async with keep.post(f"https://127.0.0.1:{s.port}/mutate", data=body) as r:
            assert r.status == 200
        assert len(opened) == 1  # the same connection served both
        await keep.close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, force_close=True)) as session:
            for _ in range(5):
                async with session.post(f"https://127.0.0.1:{s.port}/mutate", data=body) as r:
                    assert r.status == 200 and (await r.json())["response"]["allowed"]
        # The oldest were closed to make room for the newer ones; the newest 20 at most are still open.
        closed = [await _closed_by_server(reader) for reader, _ in held]
        assert sum(closed) >= 40, closed
        assert all(closed[:40]), closed
        # Past the idle timeout, the rest go too: no complete request headers, no connection.
        await asyncio.sleep(3)
        assert all([await _closed_by_server(reader) for reader, _ in held[40:]])
        for _, writer in held:
            writer.close()
        assert s.proc.poll() is None
    finally:
        s.stop()


async def test_metrics_on_their_own_port_and_not_on_the_admission_port(tmp_path):
    metrics_port = free_port()
    s = Serve(tmp_path / "certs", "--metrics-port", str(metrics_port))
    try:
        tls = ssl.create_default_context(cafile=str(s.cert_dir / "ca.crt"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                assert r.status == 200 and "audit_webhook_admission_requests_total" in await r.text()
            async with session.get(f"https://127.0.0.1:{s.port}/metrics") as r:
                assert r.status == 404
            async with session.get(f"https://127.0.0.1:{s.port}/readyz") as r:
                assert r.status == 200
    finally:
        s.stop()


async def test_json_logs_are_one_object_per_line_with_stable_keys(tmp_path):
    s = Serve(tmp_path / "certs", "--log-format", "json")
    try:
        tls = ssl.create_default_context(cafile=str(s.cert_dir / "ca.crt"))
        body = json.dumps(review(kkp_pod(), namespace="cluster-auditon01")).encode()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session, \
                session.post(f"https://127.0.0.1:{s.port}/mutate", data=body) as r:
            assert r.status == 200
    finally:
        assert s.stop() == 0
    lines = [json.loads(line) for line in s.log if line.strip()]
    assert lines and all({"time", "level", "logger", "msg"} <= set(line) for line in lines)
    decision = next(line for line in lines if line["logger"] == "audit_webhook.decisions")
    assert decision["msg"] == "admission decided"
    assert {"uid", "handler", "decision", "reason", "namespace", "latency_ms"} <= set(decision)
    assert (decision["handler"], decision["decision"], decision["reason"]) == ("mutate", "allowed", "injected")
