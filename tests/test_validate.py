"""check_set refuses a set whose key, certificate or chain is not clean PEM (radosgw could not load it),
or whose chain ends at no trusted root."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509

from devsite.certmaker import make_ca, make_cert
from rgwtls.errors import DeployError
from rgwtls.store import CertSet
from rgwtls.validate import Roots, check_set

NAMES = ("cog.example.org", "*.cog.example.org")
NOW = dt.datetime.now(dt.UTC)
CA_KEY, CA_PEM = make_ca()
ROOTS = Roots((x509.load_pem_x509_certificate(CA_PEM.encode()),))


@pytest.fixture(scope="module")
def good() -> CertSet:
    ca_key, ca_pem = CA_KEY, CA_PEM
    key, cert = make_cert(NAMES, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=60), issuer_key=ca_key)
    return CertSet(
        name="cog.example.org",
        generation=3,
        key_pem=key,
        cert_pem=cert,
        chain_pem=ca_pem,
        domains=NAMES,
        issued_at=NOW.isoformat(),
        issued_by="gw1",
        directory="https://ca.example.org/directory",
    )


def with_pem(s: CertSet, field: str, text: str) -> CertSet:
    """The set with one of key_pem, cert_pem, chain_pem replaced."""
    pems = {"key_pem": s.key_pem, "cert_pem": s.cert_pem, "chain_pem": s.chain_pem, field: text}
    return dataclasses.replace(s, key_pem=pems["key_pem"], cert_pem=pems["cert_pem"], chain_pem=pems["chain_pem"])


def refused(s: CertSet) -> str:
    with pytest.raises(DeployError) as err:
        check_set(s, NAMES, NOW, None, allow_older=False, roots=ROOTS)
    message = str(err.value)
    assert "\n" not in message
    prefix = "the set cog.example.org (generation 3) in the pool: "
    assert message.startswith(prefix)
    assert message.endswith("; run 'rgwtls issue --force'")
    return message.removeprefix(prefix).removesuffix("; run 'rgwtls issue --force'")


def test_clean_set_passes(good: CertSet) -> None:
    assert (
        check_set(good, NAMES, NOW, None, allow_older=False, roots=ROOTS).cert.subject.rfc4514_string()
        == f"CN={NAMES[0]}"
    )


def test_whitespace_around_and_between_blocks_passes(good: CertSet) -> None:
    spaced = dataclasses.replace(
        good,
        key_pem="\n" + good.key_pem + "\n\n",
        cert_pem=good.cert_pem.replace("\n", "\r\n"),
        chain_pem=good.chain_pem + "\n \t\n" + good.chain_pem,
    )
    check_set(spaced, NAMES, NOW, None, allow_older=False, roots=ROOTS)


@pytest.mark.parametrize(
    ("field", "mutate", "problem"),
    [
        ("key_pem", lambda t: t + "\x00", "the private key has bytes outside its PEM block"),
        ("key_pem", lambda t: "Bag Attributes\n" + t, "the private key has bytes outside its PEM block"),
        ("cert_pem", lambda t: t + "\x00", "the certificate has bytes outside its PEM block"),
        ("cert_pem", lambda t: t + "subject=CN=x\n", "the certificate has bytes outside its PEM block"),
        ("chain_pem", lambda t: t + "\x00\x00", "the chain has bytes outside its PEM blocks"),
        ("chain_pem", lambda t: t + "\x1c", "the chain has bytes outside its PEM blocks"),
        ("chain_pem", lambda t: t + t[:40], "the chain has bytes outside its PEM blocks"),
    ],
)
def test_bytes_outside_the_pem_blocks_are_refused(
    good: CertSet, field: str, mutate: Callable[[str], str], problem: str
) -> None:
    bad = with_pem(good, field, mutate(getattr(good, field)))
    assert refused(bad) == problem


@pytest.mark.parametrize(
    ("field", "what"),
    [("key_pem", "the private key"), ("cert_pem", "the certificate"), ("chain_pem", "the chain")],
)
@pytest.mark.parametrize("byte", ["\x00", "\x7f", "\u00e9", "\x0b"])
def test_unprintable_byte_inside_a_pem_block_is_refused(good: CertSet, field: str, what: str, byte: str) -> None:
    text = getattr(good, field)
    lines = text.split("\n")
    lines[1] = lines[1][:10] + byte + lines[1][10:]
    problem = refused(with_pem(good, field, "\n".join(lines)))
    assert problem.startswith(f"{what} has bytes in its PEM block")
    assert problem.endswith("that are not printable ASCII")


def test_key_that_is_not_pem_at_all_is_refused(good: CertSet) -> None:
    assert refused(dataclasses.replace(good, key_pem="")) == "the private key has no PEM block"
    assert refused(dataclasses.replace(good, key_pem="not a key")) == "the private key has no PEM block"


def test_second_certificate_in_the_certificate_is_refused(good: CertSet) -> None:
    doubled = dataclasses.replace(good, cert_pem=good.cert_pem + good.chain_pem)
    assert refused(doubled) == "the certificate is 2 PEM blocks, not one"


def test_key_in_place_of_the_certificate_is_refused(good: CertSet) -> None:
    swapped = dataclasses.replace(good, cert_pem=good.key_pem)
    assert refused(swapped) == "the certificate holds a PEM block labelled PRIVATE KEY"


def test_key_appended_to_the_chain_is_refused(good: CertSet) -> None:
    leaked = dataclasses.replace(good, chain_pem=good.chain_pem + good.key_pem)
    assert refused(leaked) == "the chain holds a PEM block labelled PRIVATE KEY"


def test_empty_chain_is_still_refused_as_empty(good: CertSet) -> None:
    assert refused(dataclasses.replace(good, chain_pem="")) == "the chain is empty"
