"""acme.preferred_chain: of the chains the CA offers, the one that ends at the named root (Pebble's alternate roots)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from devsite.bind import Bind
from devsite.pebble import Pebble, pebble_server
from devsite.tlsca import TestCA
from tests.conftest import Result, Stack
from tests.test_issue_e2e import stored_set

CLI = Callable[..., Result]


@pytest.fixture(scope="module")
def two_root_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    # Every certificate comes with a chain to root 0 and an alternate one to root 1.
    with pebble_server(
        tmp_path_factory.mktemp("pebble-roots"), test_ca, bind.port, env={"PEBBLE_ALTERNATE_ROOTS": "1"}
    ) as p:
        yield p


def common_name(cert: x509.Certificate, subject: bool = True) -> str:
    name = cert.subject if subject else cert.issuer
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def root_name(pebble: Pebble, chain: int) -> str:
    return common_name(x509.load_pem_x509_certificate(pebble.roots_pem(chain).encode()))


def stored_chain_ends_at(stack: Stack) -> str:
    s = stored_set(stack)
    assert s is not None
    top = x509.load_pem_x509_certificates(str(s["chain_pem"]).encode())[-1]
    return common_name(top, subject=False)


def issue(stack: Stack, cli: CLI, pebble: Pebble, preferred: str) -> Result:
    settings = stack.settings()
    settings["acme"]["directory"] = pebble.directory_url
    if preferred:
        settings["acme"]["preferred_chain"] = preferred
    res = cli(stack.write_config(settings), "-v", "issue")
    assert res.code == 0, res.stderr
    return res


def test_without_a_preference_the_default_chain_is_stored(stack: Stack, cli: CLI, two_root_pebble: Pebble) -> None:
    issue(stack, cli, two_root_pebble, "")
    assert stored_chain_ends_at(stack) == root_name(two_root_pebble, 0)


def test_preferred_chain_follows_the_alternate_link_to_the_named_root(
    stack: Stack, cli: CLI, two_root_pebble: Pebble
) -> None:
    alternate = root_name(two_root_pebble, 1)
    res = issue(stack, cli, two_root_pebble, alternate)
    assert stored_chain_ends_at(stack) == alternate
    assert f"using the alternate chain that ends at {alternate}" in res.stderr
    # The stored chain verifies the leaf up to that root.
    s = stored_set(stack)
    assert s is not None
    leaf = x509.load_pem_x509_certificate(str(s["cert_pem"]).encode())
    chain = x509.load_pem_x509_certificates(str(s["chain_pem"]).encode())
    root = x509.load_pem_x509_certificate(two_root_pebble.roots_pem(1).encode())
    leaf.verify_directly_issued_by(chain[0])
    chain[-1].verify_directly_issued_by(root)


def test_preferring_the_default_root_keeps_the_default_chain(stack: Stack, cli: CLI, two_root_pebble: Pebble) -> None:
    res = issue(stack, cli, two_root_pebble, root_name(two_root_pebble, 0))
    assert stored_chain_ends_at(stack) == root_name(two_root_pebble, 0)
    assert "alternate chain" not in res.stderr


def test_a_root_no_chain_ends_at_falls_back_to_the_default_with_one_info_line(
    stack: Stack, cli: CLI, two_root_pebble: Pebble
) -> None:
    res = issue(stack, cli, two_root_pebble, "ISRG Root X2")
    assert stored_chain_ends_at(stack) == root_name(two_root_pebble, 0)
    lines = [line for line in res.lines if "acme.preferred_chain" in line]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("INFO: ACME: no chain the CA offers ends at ISRG Root X2")
    assert root_name(two_root_pebble, 1) in lines[0]  # it says what was offered
