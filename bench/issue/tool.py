"""What every tool of the issue benchmark has: a command, an environment, and what it has stored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bench.harness import BenchError, Run
from devsite.site import DOMAINS
from rgwtls.certs import key_matches_cert

EMAIL = "ops@example.org"
# Environment variables that would change how a tool finds its CA or config.
SCRUB_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "RGWTLS_CONFIG")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}
    env["LC_ALL"] = "C.UTF-8"
    return env


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


def leaf_facts(cert_pem: str, key_pem: str, who: str) -> int:
    """The leaf's serial, after checking its names and that the key is its key."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(san.get_values_for_type(x509.DNSName))
    if names != set(DOMAINS):
        raise BenchError(f"{who}: the certificate names {sorted(names)}, not {sorted(DOMAINS)}")
    if not key_matches_cert(key_pem, cert_pem):
        raise BenchError(f"{who}: the stored key does not match the certificate")
    return int(cert.serial_number)


@dataclass(frozen=True)
class Before:
    serial: int | None
    generation: int | None
    hook_offset: int


class Tool:
    key = ""
    label = ""
    uses_hook = False
    issues = True  # False: a run must leave the certificate as it is

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        """The command; `profile`: under cProfile, writing there; `importtime`: with -X importtime."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return clean_env()

    def current(self) -> tuple[int | None, int | None]:
        """(serial, generation) of what the tool has stored now."""
        raise NotImplementedError

    def verify(self, before: Before, run: Run) -> None:
        serial, generation = self.current()
        if not self.issues:
            if (serial, generation) != (before.serial, before.generation):
                raise BenchError(f"{self.label}: the no-op run changed the stored certificate")
            return
        if serial is None or serial == before.serial:
            raise BenchError(f"{self.label}: exit 0, but no new certificate was stored\n{run.tail()}")
