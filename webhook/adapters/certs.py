"""The CA and the serving certificate: create, renew, load, and follow file replacements."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
CA_DAYS, SERVING_DAYS = 3650, 365
# Renew the serving certificate when less than this is left, so a restart never serves an expired one.
RENEW_BEFORE = dt.timedelta(days=30)
# AEAD suites only, forward secret; TLS 1.3 suites are AEAD by definition.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class ServiceName:
    """The Service kube-apiserver calls: its certificate must carry these names."""

    service: str = "audit-webhook"
    namespace: str = "audit-webhook"

    def dns_names(self) -> list[str]:
        """`localhost` and every form of the Service's DNS name."""
        svc, ns = self.service, self.namespace
        return ["localhost", svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    # A reader (the server's reload loop, a kubelet) sees the old file or the new one, never half.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(cert_dir: Path) -> None:
    """A new self-signed CA in `cert_dir` (ca.crt, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit-webhook CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cert_dir / CA_KEY, _key_pem(key), 0o600)
    write_atomic(cert_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))


def create_serving(cert_dir: Path, name: ServiceName, extra_names: list[str] | None = None) -> None:
    """A serving certificate signed by the CA in `cert_dir` (tls.crt, tls.key)."""
    ca_cert = x509.load_pem_x509_certificate((cert_dir / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((cert_dir / CA_KEY).read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{cert_dir / CA_KEY}: expected an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [*name.dns_names(), *(extra_names or [])]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name.service}.{name.namespace}.svc")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVING_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # Key first: a reload that sees the new key with the old certificate fails and retries.
    write_atomic(cert_dir / TLS_KEY, _key_pem(key), 0o600)
    write_atomic(cert_dir / TLS_CERT, cert.public_bytes(serialization.Encoding.PEM))


def _serving_is_usable(cert_dir: Path, name: ServiceName) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((cert_dir / TLS_CERT).read_bytes())
        (cert_dir / TLS_KEY).stat()
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return False
    return set(name.dns_names()) <= sans


def ensure_certs(cert_dir: Path, name: ServiceName, *, renew: bool = False) -> bool:
    """Make sure `cert_dir` holds a CA and a valid serving certificate for `name`.

    Existing files are kept while they are good; returns True if anything was written.
    A directory with certificates but no CA key (mounted from cert-manager) is used as it is.
    """
    has_ca = (cert_dir / CA_CERT).exists()
    if has_ca and not (cert_dir / CA_KEY).exists():
        if not renew and (cert_dir / TLS_CERT).exists():
            return False
        raise FileNotFoundError(f"{cert_dir / CA_KEY} is missing: cannot sign a serving certificate")
    written = False
    if not has_ca:
        create_ca(cert_dir)
        written = True
    if renew or written or not _serving_is_usable(cert_dir, name):
        create_serving(cert_dir, name)
        written = True
    return written


def ca_bundle(cert_dir: Path) -> bytes:
    """The PEM of the CA, what a webhook configuration's caBundle holds (base64 of it)."""
    return (cert_dir / CA_CERT).read_bytes()


def server_context(cert_dir: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context: TLS 1.2 or newer, AEAD ciphers, the current serving certificate.

    With `client_ca`, every client must present a certificate that CA signed (mutual TLS: the
    kube-apiserver's admission client certificate).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.load_cert_chain(cert_dir / TLS_CERT, cert_dir / TLS_KEY)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    return ctx


def expiry_timestamp(cert_dir: Path) -> float:
    """When the serving certificate expires (Unix time)."""
    cert = x509.load_pem_x509_certificate((cert_dir / TLS_CERT).read_bytes())
    return cert.not_valid_after_utc.timestamp()


class CertWatcher:
    """Serves replaced certificate files without a restart.

    The listening context hands every new handshake to the newest good context (through the
    SNI callback, which OpenSSL calls with or without SNI). A new pair is loaded into a fresh
    context first, so a half-replaced pair never reaches a client: it is skipped and tried
    again on the next poll. Connections already open keep their certificate.
    """

    def __init__(self, cert_dir: Path, client_ca: Path | None = None) -> None:
        self.cert_dir = cert_dir
        self.client_ca = client_ca
        self.current = server_context(cert_dir, client_ca)
        self.listening = server_context(cert_dir, client_ca)
        self.listening.sni_callback = self._select
        self._stamp = self._fingerprint()

    def _select(self, ssl_obj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_obj.context = self.current

    def _fingerprint(self) -> tuple[int, ...]:
        out = []
        for name in (TLS_CERT, TLS_KEY):
            try:
                st = (self.cert_dir / name).stat()
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except OSError:
                out += [0, 0, 0]
        return tuple(out)

    def poll(self) -> bool:
        """Switch to the files on disk if they changed and load; True when a new pair is in use."""
        stamp = self._fingerprint()
        if stamp == self._stamp:
            return False
        try:
            fresh = server_context(self.cert_dir, self.client_ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("serving certificate changed but cannot be loaded yet (%s); keeping the old one",
                        type(exc).__name__)
            return False
        self.current, self._stamp = fresh, stamp
        log.info("serving the new certificate from %s", self.cert_dir)
        return True
