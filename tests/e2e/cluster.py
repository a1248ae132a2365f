"""A real control plane for the end-to-end tests: etcd and kube-apiserver built from Go modules
(e2e/build.sh), started the way controller-runtime's envtest starts them — own CA and client
certificate, local ports, nothing downloaded — plus kubectl and our webhook as real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.ports import free_port
from webhook.adapters.certs import ServiceName, create_ca, create_serving

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".e2e-bin"


def build_binaries() -> None:
    """Run e2e/build.sh; a failure is a test failure with the script's explanation."""
    result = subprocess.run(["bash", str(ROOT / "e2e/build.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"e2e/build.sh failed:\n{result.stderr[-4000:]}")


def client_cert(ca_dir: Path, out: Path, user: str, group: str) -> None:
    """A client certificate for `user` in `group`, signed by the CA in `ca_dir`."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, group)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


class PortTaken(RuntimeError):
    """A process of the control plane exited because another took its port first."""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on loopback, and helpers to drive them with the real kubectl."""

    work: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Further kube-apiserver flags, appended after the harness's own (e.g. the --audit-* flags of a render).
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = self.work / "pki"
        self.kubeconfig = self.work / "kubeconfig"
        self.apiserver_port = free_port()

    def start(self) -> None:
        build_binaries()
        create_ca(self.pki)
        create_serving(self.pki, ServiceName("kubernetes", "default"))
        client_cert(self.pki, self.pki, "e2e-admin", "system:masters")
        # kube-apiserver presents this certificate to every admission webhook (mutual TLS).
        client_cert(self.pki, self.pki / "webhook-client", "kube-apiserver-webhook-client", "kube-apiserver")
        (self.work / "webhook-client-kubeconfig.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "users": [{"name": "*", "user": {"client-certificate": str(self.pki / "webhook-client/client.crt"),
                                             "client-key": str(self.pki / "webhook-client/client.key")}}]}))
        webhook_config = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
                          "kubeConfigFile": str(self.work / "webhook-client-kubeconfig.yaml")}
        (self.work / "admission.yaml").write_text(yaml.safe_dump({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
            "plugins": [{"name": "ValidatingAdmissionWebhook", "configuration": webhook_config},
                        {"name": "MutatingAdmissionWebhook", "configuration": webhook_config}]}))
        sa_key = ec.generate_private_key(ec.SECP256R1())
        (self.pki / "sa.key").write_bytes(sa_key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        (self.pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        # A port can still be taken between choosing and binding it (by a listener of another process): start
        # again on new ports then, rather than failing every test of the module.
        for attempt in range(3):
            try:
                self._launch(free_port(), free_port())
                return
            except PortTaken:
                self.stop()
                self.processes.clear()
                shutil.rmtree(self.work / "etcd", ignore_errors=True)
                self.apiserver_port = free_port()
                if attempt == 2:
                    raise

    def _launch(self, etcd_port: int, peer_port: int) -> None:
        self._spawn("etcd", [str(BIN / "etcd"), "--data-dir", str(self.work / "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                             "--unsafe-no-fsync", "--log-level", "warn"])
        self._spawn("kube-apiserver", [
            str(BIN / "kube-apiserver"),
            "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--cert-dir={self.work / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki / 'tls.crt'}", f"--tls-private-key-file={self.pki / 'tls.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            # No controller-manager runs here, so no default ServiceAccount is ever created.
            "--disable-admission-plugins=ServiceAccount",
            f"--admission-control-config-file={self.work / 'admission.yaml'}",
            *self.extra_args,
        ])
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{self.apiserver_port}",
                                                     "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate": str(self.pki / "client.crt"),
                                                 "client-key": str(self.pki / "client.key")}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}]}))
        self._wait_ready()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, timeout: float = 120) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(self.pki / "client.crt", self.pki / "client.key")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    error = PortTaken if "address already in use" in self.log(name) else RuntimeError
                    raise error(f"{name} exited:\n{self.log(name)[-3000:]}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.apiserver_port}/readyz", context=ctx,
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("kube-apiserver did not become ready:\n" + self.log("kube-apiserver")[-3000:])

    def pause(self, name: str) -> list[str]:
        """Kill one process (kube-apiserver, etcd) as a crash would; returns its arguments for `resume`."""
        proc = self.processes[name]
        proc.kill()
        proc.wait(timeout=30)
        return list(proc.args)

    def resume(self, name: str, argv: list[str]) -> None:
        """Start a paused process again and wait for the API."""
        self._spawn(name, argv)
        self._wait_ready()

    def client_context(self, server_ca: Path) -> ssl.SSLContext:
        """A client context trusting `server_ca` and presenting kube-apiserver's webhook client certificate."""
        ctx = ssl.create_default_context(cafile=str(server_ca))
        ctx.load_cert_chain(self.pki / "webhook-client/client.crt", self.pki / "webhook-client/client.key")
        return ctx

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane."""
        result = subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, *objects: dict[str, Any], extra: tuple[str, ...] = (), check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *extra, stdin=yaml.safe_dump_all(list(objects)), check=check)

    def create_json(self, obj: dict[str, Any], *extra: str) -> dict[str, Any]:
        return json.loads(self.kubectl("create", "-f", "-", "-o", "json", *extra, stdin=json.dumps(obj)).stdout)

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class WebhookProcess:
    """`python -m webhook serve --source kube` against the control plane."""

    plane: ControlPlane
    cert_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    label: str = "webhook"
    # Whose credentials it runs with: the admin's by default, or e.g. its ServiceAccount's token.
    kubeconfig: Path | None = None

    def start(self) -> None:
        self.log_path = self.plane.work / f"{self.label}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--source", "kube", "--kubeconfig",
             str(self.kubeconfig or self.plane.kubeconfig),
             "--host", "127.0.0.1", "--port", str(self.port), "--cert-dir", str(self.cert_dir),
             "--reload-interval", "0.5", "--client-ca", str(self.plane.pki / "ca.crt"),
             # Only kube-apiserver's admission client: the admin's certificate, of the same CA, is refused.
             "--client-name", "kube-apiserver-webhook-client", *self.extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ctx = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("webhook exited:\n" + self.log_path.read_text()[-3000:])
            try:
                ctx = ctx or self.plane.client_context(self.cert_dir / "ca.crt")
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.3)
        raise RuntimeError("webhook did not become ready:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@dataclass
class ReconcilerProcess:
    """`python -m webhook reconcile` against the control plane: the writing half, alone."""

    plane: ControlPlane
    kubeconfig: Path | None = None
    extra: tuple[str, ...] = ()
    label: str = "reconciler"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path = self.plane.work / f"{self.label}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "reconcile", "--kubeconfig", str(self.kubeconfig or self.plane.kubeconfig),
             "--health-host", "127.0.0.1", "--health-port", str(self.port), *self.extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("reconciler exited:\n" + self.log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("reconciler did not become ready:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            return self.proc.wait(timeout=60)
        return self.proc.returncode if self.proc else None


def webhook_configurations(port: int) -> list[dict[str, Any]]:
    """deploy/overlays/kkp/webhooks.yaml with `url:` clients on loopback and no caBundle (the webhook fills it in)."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/overlays/kkp/webhooks.yaml").read_text()))
    for doc in docs:
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}"}
    return docs


def eventually(check: Any, timeout: float = 30.0) -> Any:
    """`check()` once it is truthy, or its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


