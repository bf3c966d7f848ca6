"""A throwaway CA for the test servers' own HTTPS (Pebble's API, the WAPI emulator).

Debian's pebble ships no TLS certificate, and the emulator must be verified
like a real Infoblox appliance, so the stack makes its own CA per run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ca_extensions(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey, path_length: int | None
) -> x509.CertificateBuilder:
    """What makes a certificate a CA's, for every CA of the dev site (this one, devsite.crlca's root and issuer).

    It signs certificates and CRLs, and names its own key: Python 3.13
    verifies with X509_STRICT, which wants the key identifiers.
    """
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


class TestCA:
    """One CA per test run; `issue` makes server certificates for 127.0.0.1 and localhost."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path, name: str = "rgwtls test CA") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        self.cert = ca_extensions(builder, self.key, 0).sign(self.key, hashes.SHA256())
        self.ca_pem = _write(workdir / "ca.pem", self.cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def issue(
        self, name: str, hosts: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> tuple[Path, Path]:
        """A server certificate and key, written as `<name>.pem` and `<name>.key`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path = _write(self.workdir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        key_path = _write(
            self.workdir / f"{name}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return cert_path, key_path
