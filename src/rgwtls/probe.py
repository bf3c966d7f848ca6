"""What a gateway serves: one TLS handshake, with SNI, trusting nothing.

We compare the served certificate with the pool's by fingerprint; whether a
client would trust it is settled when the set is validated.
"""

from __future__ import annotations

import hashlib
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def served_certificate(endpoint: str, sni: str, timeout: float) -> x509.Certificate:
    """The certificate `host:port` serves for `sni`; raises OSError if there is none."""
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no certificate in the handshake")
    return x509.load_der_x509_certificate(der)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
