"""What a gateway serves: one TLS handshake, with SNI, trusting nothing.

We compare the served certificate with the pool's by fingerprint; whether a
client would trust it is settled when the set is validated. Every deploy run
does this handshake, so nothing here imports cryptography: the fingerprint of
a PEM certificate is the SHA-256 of its base64-decoded body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import ssl
from typing import TYPE_CHECKING

from rgwtls.config import DeployConfig

if TYPE_CHECKING:
    from cryptography import x509

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


def served_der(endpoint: str, sni: str, timeout: float) -> bytes:
    """The DER certificate `host:port` serves for `sni`; raises OSError if there is none."""
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no certificate in the handshake")
    return der


def served_certificate(endpoint: str, sni: str, timeout: float) -> x509.Certificate:
    from cryptography import x509

    return x509.load_der_x509_certificate(served_der(endpoint, sni, timeout))


def served_fingerprint(endpoint: str, sni: str, timeout: float) -> str:
    """SHA-256 of the certificate the endpoint serves for this name; raises OSError."""
    return hashlib.sha256(served_der(endpoint, sni, timeout)).hexdigest()


def pem_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate in `pem`, as `fingerprint` gives for it; raises ValueError."""
    start = pem.find(_BEGIN)
    end = pem.find(_END, start)
    if start < 0 or end < 0:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode("".join(pem[start + len(_BEGIN) : end].split()), validate=True)
    except binascii.Error as e:
        raise ValueError(f"the PEM certificate is not base64 ({e})") from None
    return hashlib.sha256(der).hexdigest()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def server_name(d: DeployConfig, names: tuple[str, ...]) -> str:
    """The SNI a check sends: the configured one, else a plain name, else one the wildcard covers."""
    if d.verify_server_name:
        return d.verify_server_name
    plain = [n for n in names if not n.startswith("*.")]
    return plain[0] if plain else "rgwtls-check." + names[0][2:]
