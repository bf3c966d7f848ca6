"""[[certificate]]: the sets of names issued, stored and deployed together, each under a name safe for files."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from rgwtls.config.acme import KEY_TYPES, AcmeConfig
from rgwtls.config.dns import CHALLENGES, PERSIST, DnsConfig
from rgwtls.config.values import Where, is_profile_name


@dataclass(frozen=True)
class CertificateConfig:
    """One [[certificate]]: a set of names issued, stored and deployed together."""

    name: str
    domains: tuple[str, ...]
    key_type: str = ""
    # Publish at _acme-challenge.<challenge_alias> instead of following the
    # _acme-challenge CNAMEs (acme.sh's --challenge-alias); empty: follow them.
    challenge_alias: str = ""
    # This certificate's profile; empty: acme.profile.
    profile: str = ""
    # "dns-01" or "dns-persist-01"; empty: dns.challenge.
    challenge: str = ""

    def wanted_profile(self, acme: AcmeConfig) -> str:
        return self.profile or acme.profile

    def wanted_challenge(self, dns: DnsConfig) -> str:
        return self.challenge or dns.challenge

    def persistent(self, dns: DnsConfig) -> bool:
        """Whether its names are validated by standing dns-persist-01 records."""
        return self.wanted_challenge(dns) == PERSIST


# The longest file name the code makes from a name is the temporary file of a
# kept staging set, ".NAME.staging.json.rgwtls-PID" (about 35 bytes besides
# NAME), and 255 bytes is what Linux file systems hold; RADOS object names
# (NAME/last-deploy) hold far more. 64 leaves room for new files, and keeps
# log lines and metric labels readable.
MAX_NAME_BYTES = 64


def name_problem(name: str) -> str | None:
    """Why a certificate name is unsafe as a RADOS object name and as a file name, or None.

    librados cuts object names at a NUL, so two names that differ after it
    would share every object; '/' and a leading '.' would reach other files
    of the state directory; control characters break log lines and files.
    """
    if not name:
        return "must not be empty"
    if "\0" in name:
        return "holds a NUL byte; use letters, digits, '.', '-' and '_'"
    bad = next((c for c in name if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        return f"holds the control character U+{ord(bad):04X}; use letters, digits, '.', '-' and '_'"
    if "/" in name:
        return "must not hold '/': it names a RADOS object and a file; use '.', '-' or '_' instead"
    if name.startswith("."):
        return f"{name!r} must not start with '.'"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; at most {MAX_NAME_BYTES} are allowed (it names files in deploy.state_dir)"
    return None


def validate_certificates(certificates: Sequence[CertificateConfig], dns: DnsConfig, where: Where) -> None:
    """Each name once and safe to use as a file name; domains, profile and challenge each as the CA takes them."""
    names: set[str] = set()
    for i, cert in enumerate(certificates):
        key = f"certificate[{i}]"
        problem = name_problem(cert.name)
        if problem:
            raise where.error(f"{key}.name", problem)
        if cert.name in names:
            raise where.error(f"{key}.name", f"{cert.name!r} is configured twice")
        names.add(cert.name)
        if not cert.domains:
            raise where.error(f"{key}.domains", "must list at least one domain")
        if cert.key_type and cert.key_type not in KEY_TYPES:
            raise where.error(f"{key}.key_type", f"must be one of {', '.join(KEY_TYPES)}")
        for domain in cert.domains:
            if domain != domain.lower().rstrip(".") or " " in domain or "*" in domain[1:]:
                raise where.error(f"{key}.domains", f"{domain!r} is not a lower-case domain name")
        if cert.profile and not is_profile_name(cert.profile):
            raise where.error(f"{key}.profile", f"{cert.profile!r} is not a profile name such as classic")
        if cert.challenge and cert.challenge not in CHALLENGES:
            raise where.error(f"{key}.challenge", f"must be {' or '.join(CHALLENGES)}, not {cert.challenge!r}")
        if cert.challenge_alias and cert.persistent(dns):
            raise where.error(
                f"{key}.challenge_alias",
                "is for dns-01 only: a dns-persist-01 record is always _validation-persist.NAME; remove it",
            )
        alias = cert.challenge_alias
        if alias and (alias != alias.lower().rstrip(".") or "*" in alias or " " in alias or "." not in alias):
            raise where.error(f"{key}.challenge_alias", f"{alias!r} is not a lower-case domain name")
