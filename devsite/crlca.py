"""A CA of the dev site's own that publishes a CRL over HTTP on 127.0.0.1, as a public CA does.

Pebble publishes no CRL, and since Let's Encrypt switched OCSP off (2025-08-06)
a CRL is how a CA says a certificate is revoked. This CA is a root and an
issuing intermediate, as a public CA's chain is; its certificates name the
CRL distribution point `http://127.0.0.1:PORT/issuer.crl`, and the
intermediate signs the CRL. The server can misbehave on request, as a
hostile or broken CRL server does: refuse connections, trickle its answer,
send without end, sign with another key, or serve a stale CRL.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devsite.ports import free_port
from devsite.tlsca import ca_extensions

Mode = Literal["serve", "down", "trickle", "endless", "bad-signature", "stale"]
PATH = "/issuer.crl"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    return ca_extensions(b, key, None if issuer is None else 0).sign(signer, hashes.SHA256())


class CrlCA:
    """Root, issuing intermediate, the CRL it signs, and the HTTP server that publishes it."""

    def __init__(self, name: str = "rgwtls devsite CRL") -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca_cert(f"{name} root", self.root_key, None, self.root_key)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.issuer = _ca_cert(f"{name} issuer", self.key, self.root, self.root_key)
        self.port = free_port()
        self.mode: Mode = "serve"
        self.fetches = 0  # requests answered (or begun), to see the cache at work
        self.next_update = dt.timedelta(hours=1)
        self.part = ""  # the issuing distribution point the CRL names, if not its own URL
        self._revoked: list[x509.RevokedCertificate] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def issuer_pem(self) -> str:
        return self.issuer.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self, names: tuple[str, ...], days: float = 60, crl_url: str | None = None, backdate: float = 1
    ) -> tuple[str, str]:
        """(key PEM, certificate PEM) for `names`, naming this CA's CRL (or `crl_url`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=backdate)
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url or self.url)], None, None, None)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.CRLDistributionPoints([point]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()

    def revoke(self, cert_pem: str, reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise) -> None:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        with self._lock:
            self._revoked.append(entry)

    def crl_der(self, signer: ec.EllipticCurvePrivateKey | None = None, stale: bool = False) -> bytes:
        """The CRL as published now: every revoked serial, signed by the issuer (or `signer`)."""
        now = dt.datetime.now(dt.UTC)
        this = now - dt.timedelta(hours=2) if stale else now - dt.timedelta(minutes=1)
        nxt = now - dt.timedelta(hours=1) if stale else now + self.next_update
        b = x509.CertificateRevocationListBuilder().issuer_name(self.issuer.subject).last_update(this).next_update(nxt)
        # Partitioned, as Let's Encrypt's are: the CRL says which part it is (or, `part`, another one).
        point = x509.UniformResourceIdentifier(self.part or self.url)
        idp = x509.IssuingDistributionPoint([point], None, False, False, None, False, False)
        b = b.add_extension(idp, critical=True)
        with self._lock:
            for entry in self._revoked:
                b = b.add_revoked_certificate(entry)
        return b.sign(signer or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    # -- the HTTP server -----------------------------------------------------------

    def start(self) -> CrlCA:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(10)
        if self._sock is not None:
            self._sock.close()

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="crl-ca")  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "down":
                conn.close()  # as good as a refused connection: nothing is read, nothing answered
                continue
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            self.fetches += 1
            path = request.split(b" ", 2)[1].decode(errors="replace") if request.count(b" ") >= 2 else ""
            if path != PATH:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            self._answer(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        mode = self.mode
        if mode == "endless":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nConnection: close\r\n\r\n")
            block = b"\0" * 65536
            while not self._stop.is_set():
                conn.sendall(block)
            return
        other = ec.generate_private_key(ec.SECP256R1()) if mode == "bad-signature" else None
        body = self.crl_der(signer=other, stale=mode == "stale")
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        if mode != "trickle":
            conn.sendall(head + body)
            return
        # One byte a second: every read is answered in time, the whole never.
        for byte in head + body:
            if self._stop.wait(1.0):
                return
            conn.sendall(bytes([byte]))


@contextmanager
def crl_ca(name: str = "rgwtls devsite CRL") -> Iterator[CrlCA]:
    ca = CrlCA(name).start()
    try:
        yield ca
    finally:
        ca.stop()


def wait_for_fetch(ca: CrlCA, before: int, timeout: float) -> None:
    """Until the server has had a request since `before`."""
    end = time.monotonic() + timeout
    while ca.fetches <= before:
        if time.monotonic() > end:
            raise TimeoutError(f"no request to {ca.url} within {timeout}s")
        time.sleep(0.05)
