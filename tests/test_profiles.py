"""Certificate profiles (draft-ietf-acme-profiles): asked for, checked, recorded, shown, renewed on change.

End to end against Pebble 2.10 with Let's Encrypt's three profiles of 2026:
classic (90 days), tlsserver (45 days) and shortlived (160 hours).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.bind import Bind
from devsite.certmaker import make_cert
from devsite.pebble import HOUR, PROFILES, Pebble, pebble_server
from devsite.tlsca import TestCA
from rgwtls import certs
from rgwtls.check import CRITICAL, OK, WARNING, Threshold, judge
from rgwtls.config import AcmeConfig, CertificateConfig, load, parse
from rgwtls.errors import ConfigError, StoreError
from rgwtls.issue import _decide
from rgwtls.status import CertFacts, PoolFacts, Report, Status, gather
from rgwtls.store import CertSet
from tests.conftest import ZONE, Result, Stack
from tests.test_decide import DIRECTORY, DOMAINS, FakeSession, a_set
from tests.test_issue_e2e import assert_one_error_line, stored_set

CLI = Callable[..., Result]
NOW = dt.datetime.now(dt.UTC)
SHORTLIVED_HOURS = PROFILES["shortlived"] / HOUR


# -- the stored set -------------------------------------------------------------------


def test_a_set_stored_before_profiles_loads_with_none_recorded() -> None:
    s = a_set(90, 60)
    doc = json.loads(s.to_bytes())
    del doc["profile"]
    old = CertSet.from_bytes(json.dumps(doc).encode(), "old set")
    assert old.profile == ""
    assert old.cert_pem == s.cert_pem


def test_a_profile_stored_as_a_number_is_one_line() -> None:
    doc = json.loads(dataclasses.replace(a_set(90, 60), profile="classic").to_bytes())
    doc["profile"] = 7
    with pytest.raises(StoreError, match="profile is int"):
        CertSet.from_bytes(json.dumps(doc).encode(), "bad set")


# -- the decision ---------------------------------------------------------------------


def decide(current: CertSet, profile: str, session: Any = None) -> Any:
    cert = CertificateConfig(ZONE, DOMAINS)
    return _decide(cert, current, session or FakeSession(), False, (DIRECTORY,), profile)  # type: ignore[arg-type]


def test_a_profile_change_is_due_as_a_name_change_is() -> None:
    d = decide(dataclasses.replace(a_set(90, 80), profile="classic"), "tlsserver")
    assert d.due
    assert "profile changed (classic -> tlsserver)" in d.reason


def test_the_same_profile_or_none_configured_is_not_due() -> None:
    s = dataclasses.replace(a_set(90, 80), profile="classic")
    assert not decide(s, "classic").due
    assert not decide(s, "").due


def test_a_set_with_no_profile_recorded_is_renewed_once_when_one_is_configured() -> None:
    d = decide(a_set(90, 80), "classic")
    assert d.due
    assert "none recorded -> classic" in d.reason


def shortlived(hours_left: float) -> CertSet:
    not_after = NOW + dt.timedelta(hours=hours_left)
    key, cert = make_cert(DOMAINS, not_after - dt.timedelta(hours=SHORTLIVED_HOURS), not_after)
    return CertSet(ZONE, 1, key, cert, "", DOMAINS, NOW.isoformat(), "rgw1", DIRECTORY, "shortlived")


@pytest.mark.parametrize(
    ("hours_left", "due"),
    [(160, False), (120, False), (60, False), (54, False), (53, True), (30, True), (1, True)],
)
def test_shortlived_without_ari_renews_with_a_third_of_its_160_hours_left(hours_left: float, due: bool) -> None:
    # A third of 160 hours is 53.3: an hourly cron renews some 107 hours in.
    assert decide(shortlived(hours_left), "shortlived").due is due


def test_shortlived_follows_the_cas_ari_window_over_the_lifetime_rule() -> None:
    early = FakeSession(ari=NOW - dt.timedelta(minutes=5))
    assert decide(shortlived(100), "shortlived", early).due
    later = FakeSession(ari=NOW + dt.timedelta(hours=10))
    assert not decide(shortlived(40), "shortlived", later).due


def facts(hours_total: float, hours_left: float) -> PoolFacts:
    not_after = NOW + dt.timedelta(hours=hours_left)
    _, pem = make_cert(DOMAINS, not_after - dt.timedelta(hours=hours_total), not_after)
    from cryptography import x509

    base = CertFacts.of(x509.load_pem_x509_certificate(pem.encode()), NOW)
    return PoolFacts(**dataclasses.asdict(base), generation=1, issued_at=NOW.isoformat(), profile="shortlived")


def check_state(f: PoolFacts) -> tuple[int, str]:
    report = Report("rgw1", [Status(ZONE, pool=f)])
    return judge(report, Threshold.parse("20%", "w"), Threshold.parse("10%", "c"), 3600)


@pytest.mark.parametrize(
    ("hours_left", "state"),
    [(159, OK), (54, OK), (40, OK), (33, OK), (31, WARNING), (17, WARNING), (15, CRITICAL)],
)
def test_checks_default_percent_thresholds_fit_a_160_hour_certificate(hours_left: float, state: int) -> None:
    """Renewal is due at 53 hours left; WARNING at 32 (a fifth), a day late; CRITICAL at 16 (a tenth)."""
    code, line = check_state(facts(SHORTLIVED_HOURS, hours_left))
    assert code == state, line
    # The perfdata's thresholds are in days, from the certificate's own lifetime.
    assert re.search(r"days_left'=[\d.]+;1\.33;0\.67;0;6\.67", line), line


def test_fixed_day_thresholds_would_page_for_every_shortlived_certificate() -> None:
    # A 14-day warning, sane for 90-day certificates, is reached by a fresh 160-hour one.
    code, _ = judge(
        Report("rgw1", [Status(ZONE, pool=facts(SHORTLIVED_HOURS, 159))]),
        Threshold.parse("14", "w"),
        Threshold.parse("7", "c"),
        3600,
    )
    assert code == CRITICAL


# -- the configuration ----------------------------------------------------------------


def test_certificate_profile_overrides_acme_profile() -> None:
    acme = AcmeConfig(profile="classic")
    assert CertificateConfig(ZONE, DOMAINS).wanted_profile(acme) == "classic"
    assert CertificateConfig(ZONE, DOMAINS, profile="shortlived").wanted_profile(acme) == "shortlived"


def test_a_profile_that_is_no_name_is_one_line() -> None:
    raw = {"acme": {"profile": "classic please"}, "certificate": [{"name": ZONE, "domains": list(DOMAINS)}]}
    with pytest.raises(ConfigError, match=r"acme\.profile: 'classic please' is not a profile name"):
        parse(raw, Path("/etc/rgwtls/rgwtls.toml"))


# -- end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    with pebble_server(tmp_path_factory.mktemp("pebble-profiles"), test_ca, bind.port, profiles=PROFILES) as p:
        yield p


def settings_for(stack: Stack, pebble: Pebble, profile: str) -> dict[str, Any]:
    settings = stack.settings()
    settings["acme"]["directory"] = pebble.directory_url
    settings["acme"]["profile"] = profile
    return settings


def lifetime_hours(stack: Stack) -> float:
    s = stored_set(stack)
    assert s is not None
    return certs.cert_info(str(s["cert_pem"])).lifetime.total_seconds() / HOUR


def test_each_profile_gives_its_lifetime_and_a_change_renews(stack: Stack, cli: CLI, profiled_pebble: Pebble) -> None:
    config = stack.write_config(settings_for(stack, profiled_pebble, "classic"))
    res = cli(config, "issue")
    assert res.code == 0, res.stderr
    assert round(lifetime_hours(stack)) == 90 * 24
    assert "profile classic" in cli(config, "status").stdout
    # The per-certificate key wins, and a profile change is due at once.
    settings = settings_for(stack, profiled_pebble, "classic")
    settings["certificate"][0]["profile"] = "tlsserver"
    config = stack.write_config(settings)
    res = cli(config, "issue")
    assert res.code == 0, res.stderr
    assert "profile changed (classic -> tlsserver)" in res.stderr
    assert round(lifetime_hours(stack)) == 45 * 24
    config = stack.write_config(settings_for(stack, profiled_pebble, "shortlived"))
    res = cli(config, "issue")
    assert res.code == 0, res.stderr
    assert round(lifetime_hours(stack)) == 160
    s = stored_set(stack)
    assert s is not None
    assert s["profile"] == "shortlived"
    assert s["generation"] == 3
    doc = json.loads(cli(config, "status", "--json").stdout)
    assert doc["certificates"][0]["pool"]["profile"] == "shortlived"
    # Fresh: not due. The CA's own ARI window for a 160-hour certificate decides.
    res = cli(config, "-v", "issue")
    assert res.code == 0, res.stderr
    opens = re.search(r"window \(ARI\) opens (\S+ \S+) UTC", res.stderr)
    assert opens is not None, res.stderr
    when = dt.datetime.strptime(opens.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
    info = certs.cert_info(str(s["cert_pem"]))
    assert info.not_before + dt.timedelta(hours=24) < when < info.not_after - dt.timedelta(hours=24)
    # check's default thresholds, in percent, judge the real 160-hour certificate.
    report = gather(load(config), served=False, deployed=False)
    code, line = judge(report, Threshold.parse("20%", "w"), Threshold.parse("10%", "c"), 3600)
    assert code == OK, line
    assert "good for 6.7 days" in line


def test_a_profile_the_ca_does_not_offer_is_one_line_naming_those_it_does(
    stack: Stack, cli: CLI, profiled_pebble: Pebble
) -> None:
    res = cli(stack.write_config(settings_for(stack, profiled_pebble, "longlived")), "issue")
    assert_one_error_line(
        res, "acme.profile is 'longlived', which", "does not offer", "(it offers: classic, shortlived, tlsserver)"
    )
    assert stored_set(stack) is None
