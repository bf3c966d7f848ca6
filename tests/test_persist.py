"""dns-persist-01 records: built from the config, judged as the CA judges them, and check's WARNING."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from rgwtls.check import WARNING, judge
from rgwtls.config import CertificateConfig, Config, Threshold, parse
from rgwtls.errors import ConfigError
from rgwtls.persist import Record, from_bytes, merged, records, to_bytes
from rgwtls.persist import judge as judge_record
from rgwtls.status import Report, Status
from tests.test_profiles import facts

ACCOUNT = "https://acme.example/acct/1"
ISSUER = "letsencrypt.org"
WILD = Record("cog.example.org", ISSUER, ACCOUNT, wildcard=True)


def test_one_record_per_name_with_policy_wildcard_where_a_wildcard_is_ordered() -> None:
    cert = CertificateConfig("c", ("cog.example.org", "*.cog.example.org", "s3.example.org"))
    recs = records(cert, ISSUER, ACCOUNT)
    assert [(r.name, r.value) for r in recs] == [
        ("_validation-persist.cog.example.org", f"{ISSUER}; accounturi={ACCOUNT}; policy=wildcard"),
        ("_validation-persist.s3.example.org", f"{ISSUER}; accounturi={ACCOUNT}"),
    ]
    assert recs[0].zone_line(60) == f'_validation-persist.cog.example.org. 60 IN TXT "{recs[0].value}"'


def test_certificates_sharing_a_name_share_one_record_the_wildcard_one() -> None:
    bare = Record("cog.example.org", ISSUER, ACCOUNT, wildcard=False)
    assert merged([bare, WILD]) == [WILD]
    assert merged([WILD, bare]) == [WILD]


def test_the_pool_object_round_trips() -> None:
    assert from_bytes(to_bytes([WILD])) == [WILD]
    with pytest.raises(ValueError, match="not a list of records"):
        from_bytes(b'{"domain": 1}')


@pytest.mark.parametrize(
    "value",
    [
        f"{ISSUER}; accounturi={ACCOUNT}; policy=wildcard",
        f"LetsEncrypt.org.;accounturi={ACCOUNT};Policy=WILDCARD",  # as a person may type it
        f"{ISSUER}; accounturi={ACCOUNT}; policy=wildcard; persistUntil=4102444800",
    ],
)
def test_a_value_the_ca_accepts_is_ours(value: str) -> None:
    assert judge_record(WILD, ["v=spf1 -all", value]) is None


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ([], "missing (no value for issuer letsencrypt.org)"),
        ([f"other.example; accounturi={ACCOUNT}; policy=wildcard"], "missing"),
        (
            [f"{ISSUER}; accounturi=https://acme.example/acct/2; policy=wildcard"],
            "accounturi=https://acme.example/acct/2",
        ),
        ([f"{ISSUER}; accounturi={ACCOUNT}"], "no policy=wildcard, which *.cog.example.org needs"),
        ([f"{ISSUER}; accounturi={ACCOUNT}; policy=wildcard; persistUntil=1"], "persistUntil passed at 1970-01-01"),
        ([f"{ISSUER}; policy=wildcard"], "accounturi=(none)"),
    ],
)
def test_a_value_the_ca_refuses_is_named(values: list[str], said: str) -> None:
    problem = judge_record(WILD, values, dt.datetime.now(dt.UTC))
    assert problem is not None
    assert said in problem
    assert problem.startswith("missing" if "missing" in said else "mismatched: ")


def test_check_warns_of_a_persistent_record_while_the_certificate_is_good() -> None:
    st = Status("cog.example.org", pool=facts(2160, 2000))
    st.persist_warnings.append(
        "cog.example.org: dns-persist-01 record _validation-persist.cog.example.org at ns1: missing"
    )
    state, line = judge(Report("rgw1", [st]), Threshold.parse("20%", "w"), Threshold.parse("10%", "c"), 3600)
    assert state == WARNING
    assert line.startswith(
        "RGWTLS WARNING - cog.example.org: dns-persist-01 record _validation-persist.cog.example.org"
    )


def parsed(
    dns: dict[str, object], cert: dict[str, object] | None = None, acme: dict[str, object] | None = None
) -> Config:
    raw = {
        "dns": dns,
        "acme": acme or {},
        "certificate": [{"name": "c", "domains": ["cog.example.org"], **(cert or {})}],
    }
    return parse(raw, Path("/etc/rgwtls/rgwtls.toml"))


def test_dns_challenge_is_the_default_a_certificate_overrides() -> None:
    cfg = parsed({"challenge": "dns-persist-01"})
    assert cfg.certificates[0].persistent(cfg.dns)
    cfg = parsed({"challenge": "dns-persist-01"}, {"challenge": "dns-01"})
    assert not cfg.certificates[0].persistent(cfg.dns)
    cfg = parsed({}, {"challenge": "dns-persist-01"})
    assert cfg.certificates[0].persistent(cfg.dns)


@pytest.mark.parametrize(
    ("dns", "cert", "acme", "said"),
    [
        ({"challenge": "http-01"}, {}, {}, "dns.challenge: must be dns-01 or dns-persist-01, not 'http-01'"),
        ({}, {"challenge": "dns-persist"}, {}, "certificate[0].challenge: must be dns-01 or dns-persist-01"),
        ({"challenge": "dns-persist-01"}, {"challenge_alias": "acme.example.net"}, {}, "is for dns-01 only"),
        ({}, {}, {"persist_issuer": "LetsEncrypt.org"}, "acme.persist_issuer: 'LetsEncrypt.org' is not a lower-case"),
        ({}, {}, {"persist_issuer": "letsencrypt.org; x=y"}, "acme.persist_issuer"),
    ],
)
def test_a_wrong_challenge_setting_is_one_line(
    dns: dict[str, object], cert: dict[str, object], acme: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        parsed(dns, cert, acme)
