"""A set is stored and installed only if its chain ends at a trusted root: the system's or deploy.trusted_roots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devsite.site import to_toml
from rgwtls import config
from rgwtls.errors import ConfigError, DeployError, RgwtlsError
from rgwtls.store import CertSet
from rgwtls.validate import Roots, check_issued, check_set, system_roots, trusted_roots

NAMES = ("cog.example.org", "*.cog.example.org")
NOW = dt.datetime.now(dt.UTC)
Key = ec.EllipticCurvePrivateKey


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject: str, key: Key, issuer: str, signer: Key, ca: bool, sans: tuple[str, ...] = ()) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=60))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    return b.sign(signer, hashes.SHA256())


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


class Ca:
    """A root, an intermediate under it, and a leaf for NAMES: what an ACME CA sends."""

    def __init__(self, root_name: str) -> None:
        self.root_key, self.int_key, self.leaf_key = new_key(), new_key(), new_key()
        self.root_name = root_name
        self.root = cert(root_name, self.root_key, root_name, self.root_key, ca=True)
        self.intermediate = cert(f"{root_name} Intermediate", self.int_key, root_name, self.root_key, ca=True)
        self.leaf = cert(
            NAMES[0], self.leaf_key, self.intermediate.subject.rfc4514_string()[3:], self.int_key, False, NAMES
        )

    def set(self, *chain: x509.Certificate) -> CertSet:
        key_pem = self.leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return CertSet(
            name=NAMES[0],
            generation=4,
            key_pem=key_pem,
            cert_pem=pem(self.leaf),
            chain_pem=pem(*(chain or (self.intermediate,))),
            domains=NAMES,
            issued_at=NOW.isoformat(),
            issued_by="issuer",
            directory="https://acme.example.org/directory",
        )


def check(s: CertSet, *roots: x509.Certificate) -> None:
    check_set(s, NAMES, NOW, None, allow_older=False, roots=Roots(roots))


def test_a_chain_to_a_self_signed_root_nobody_trusts_is_refused_naming_its_top_issuer() -> None:
    ca = Ca("Test CA Root 5b3f")
    with pytest.raises(DeployError) as e:
        check(ca.set(ca.intermediate, ca.root), Ca("Another Root").root)
    assert str(e.value) == (
        "the set cog.example.org (generation 4) in the pool: its chain ends at CN=Test CA Root 5b3f, "
        "which is neither a trusted root nor issued by one; set deploy.trusted_roots to a PEM bundle with that "
        "root, e.g. a private ACME CA's root"
    )
    # Against the system's store alone, too: no public CA issued it.
    with pytest.raises(DeployError, match="its chain ends at CN=Test CA Root 5b3f"):
        check_set(ca.set(), NAMES, NOW, None, allow_older=False, roots=Roots(system_roots()))


def test_a_chain_to_a_root_in_the_bundle_passes_with_or_without_the_root_itself() -> None:
    ca = Ca("Private Root")
    check(ca.set(), ca.root)
    check(ca.set(ca.intermediate, ca.root), ca.root)


def test_a_cross_signed_top_issued_by_a_trusted_root_passes_though_its_own_root_is_unknown() -> None:
    old, new = Ca("Old Root X1"), Ca("New Root X2")
    # X2 cross-signed by X1, as ISRG Root X2 was by X1: same subject and key as X2's self-signed root.
    cross = cert("New Root X2", new.root_key, "Old Root X1", old.root_key, ca=True)
    check(new.set(new.intermediate, cross), old.root)
    # The self-signed X2 at the top is not issued by X1: a host that knows only X1 refuses it.
    with pytest.raises(DeployError, match="its chain ends at CN=New Root X2"):
        check(new.set(new.intermediate, new.root), old.root)


def test_a_top_claiming_a_trusted_issuer_but_signed_by_another_key_is_refused() -> None:
    real, forger = Ca("Trusted Root"), Ca("Forger")
    forged = cert("Forger Intermediate", forger.int_key, "Trusted Root", forger.root_key, ca=True)
    leaf = cert(NAMES[0], forger.leaf_key, "Forger Intermediate", forger.int_key, False, NAMES)
    forger.leaf = leaf
    with pytest.raises(DeployError, match="its chain ends at CN=Trusted Root, which is neither"):
        check(forger.set(forged), real.root)


def test_the_system_store_loads_without_a_warning_and_trusts_its_own_roots() -> None:
    roots = system_roots()
    assert len(roots) > 10
    # Each root of the store, as the top of a chain (a CA that sends its root), ends at a trusted root.
    assert all(Roots(roots).issued(r) for r in roots[:20])


def write_config(tmp_path: Path, roots: str) -> config.Config:
    settings = {
        "deploy": {"trusted_roots": roots},
        "certificate": [{"name": NAMES[0], "domains": list(NAMES)}],
    }
    path = tmp_path / "rgwtls.toml"
    path.write_text(to_toml(settings))
    path.chmod(0o644)
    return config.load(path)


def test_deploy_trusted_roots_adds_the_bundle_to_the_system_store(tmp_path: Path) -> None:
    ca = Ca("Private ACME CA Root")
    bundle = tmp_path / "roots.pem"
    bundle.write_text(pem(Ca("Unrelated").root, ca.root))
    roots = trusted_roots(write_config(tmp_path, str(bundle)))
    check_set(ca.set(), NAMES, NOW, None, allow_older=False, roots=roots)
    assert len(roots.certs) == len(system_roots()) + 2
    check_issued(ca.set(), write_config(tmp_path, str(bundle)))


def test_issue_refuses_a_set_whose_chain_ends_at_no_trusted_root(tmp_path: Path) -> None:
    ca = Ca("Pebble Root CA 0e4a")
    with pytest.raises(RgwtlsError) as e:
        check_issued(ca.set(), write_config(tmp_path, ""))
    assert str(e.value) == (
        "cog.example.org: the CA's certificate is not stored: its chain ends at CN=Pebble Root CA 0e4a, which is "
        "neither a trusted root nor issued by one; set deploy.trusted_roots to a PEM bundle with that root, "
        "e.g. a private ACME CA's root"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist; write the roots there as PEM, or empty the key"),
        ("", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "1 certificate(s) in"),
    ],
)
def test_a_bad_trusted_roots_bundle_is_one_line_naming_the_key(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    bundle = tmp_path / "roots.pem"
    if content is not None:
        bundle.write_text(content)
    cfg = write_config(tmp_path, str(bundle))
    with pytest.raises(ConfigError) as e:
        trusted_roots(cfg)
    assert str(e.value).startswith(f"config {cfg.path}: deploy.trusted_roots: ")
    assert problem in str(e.value)
