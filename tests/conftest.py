"""Fixtures: real certificates, a real HTTPS server over a real YAML store, a real client."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from webhook.adapters.certs import CertWatcher, ServiceName, ensure_certs
from webhook.adapters.metrics import Metrics
from webhook.adapters.server import Webhook
from webhook.adapters.store.files import FileStore
from webhook.core.options import Options


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and serving certificate made by the project's own code."""
    path = tmp_path_factory.mktemp("certs")
    ensure_certs(path, ServiceName())
    return path


@pytest.fixture(scope="session")
def client_tls(cert_dir: Path) -> ssl.SSLContext:
    """A client context that trusts only our CA."""
    return ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))


@dataclass
class Running:
    """A running webhook and a client to talk to it."""

    url: str
    session: aiohttp.ClientSession
    webhook: Webhook

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST a body (JSON-encoded unless bytes); returns (status, parsed JSON)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json(content_type=None)

    async def get(self, path: str) -> tuple[int, str]:
        """GET a page as text."""
        async with self.session.get(self.url + path) as r:
            return r.status, await r.text()


def write_store(root: Path, objects: list[dict[str, Any]]) -> Path:
    """Write objects as one multi-document YAML file, the way an operator would."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "objects.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return root


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(aiohttp_server: Any, cert_dir: Path, client_tls: ssl.SSLContext,
                       tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start the webhook over HTTPS on a store of the given objects (or directory)."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(objects: list[dict[str, Any]] | Path, options: Options | None = None) -> Running:
        root = objects if isinstance(objects, Path) else write_store(tmp_path / "store", objects)
        webhook = Webhook(store=FileStore(root), options=options or Options.default(), metrics=Metrics())
        server = await aiohttp_server(webhook.app(), ssl=CertWatcher(cert_dir).listening)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls))
        sessions.append(session)
        return Running(f"https://127.0.0.1:{server.port}", session, webhook)

    yield start
    for session in sessions:
        await session.close()
