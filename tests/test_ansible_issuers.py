"""The Ansible role with several issuer hosts, and a site whose issuer ran as root before.

Run for real on a fleet of its own (tests/ansible_site.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.ansible_helpers import (
    run_job,
)
from tests.ansible_site import (
    HOSTS,
    ISSUER_USER,
    Site,
    assert_clean,
    converged_site,
    issue_minute,
    issuer_config,
    owner,
)
from tests.conftest import SiteServices


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, site_services: SiteServices) -> Iterator[Site]:
    with converged_site(tmp_path_factory, site_services) as fleet:
        yield fleet


# -- several issuers; the move from a root issuer ------------------------------------


def test_two_issuer_hosts_each_issue_hourly_half_an_hour_apart_and_the_third_gets_nothing_of_the_issuer(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    two = ["-e", json.dumps({"rgwtls_issuer_hosts": ["rgw1", "rgw2"]})]
    try:
        play = site.fleet.play(*two)
        assert_clean(play)
        assert play.changed()["rgw3"] == 0, play.output
        base = issue_minute("rgw1")
        for name, minute in (("rgw1", base), ("rgw2", (base + 30) % 60)):
            host = site.host(name)
            issue = host.cron_jobs()["rgwtls issue"]
            assert (issue.schedule, issue.user) == ([str(minute), "*", "*", "*", "*"], ISSUER_USER)
            assert owner(host.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
            assert (host.config_dir / "wapi-password").exists()
        assert "rgwtls issue" not in site.host("rgw3").cron_jobs()
        assert sorted(p.name for p in site.host("rgw3").config_dir.iterdir()) == ["rgwtls.toml"]
        # The standby's job runs as the issuer's user, with what the role gave it there (the
        # pool's set came from the previous tests' CA, so it renews, and says only that).
        res = run_job(site.host("rgw2").cron_jobs()["rgwtls issue"])
        assert res.returncode == 0, res.stderr
        assert all(line.startswith("NOTICE") for line in res.stderr.splitlines()), res.stderr
        again = site.fleet.play(*two)
        assert_clean(again)
        assert again.changed() == dict.fromkeys(HOSTS, 0), again.output
    finally:
        back = site.fleet.play()
    assert_clean(back)
    rgw2 = site.host("rgw2")
    assert "rgwtls issue" not in rgw2.cron_jobs()
    assert sorted(p.name for p in rgw2.config_dir.iterdir()) == ["rgwtls.toml"]
    assert sorted(p.name for p in rgw2.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]


def test_a_site_whose_issuer_ran_as_root_gets_its_files_re_owned_and_its_kept_sets_moved_then_no_change(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    as_root = site.fleet.play("--limit", "rgw1", "-e", "rgwtls_issuer_user=root")
    assert_clean(as_root, ("rgw1",))
    assert issuer.cron_jobs()["rgwtls issue"].user == "root"
    assert owner(issuer.config_dir / "wapi-password") == ("root", "root", 0o600)
    assert "run_as" not in issuer_config(site)["acme"]
    # Before issue 22 the issuer kept its sets in deploy's state directory.
    old = issuer.prefix / "var/lib/rgwtls/issued"
    old.mkdir(mode=0o700)
    (old / "cog.example.org.order").write_text('{"a note": "of an order in flight"}\n')
    (old / "cog.example.org.order").chmod(0o600)
    moved = issuer.issuer_state_dir / "issued/cog.example.org.order"
    try:
        play = site.fleet.play()
        assert_clean(play)
        assert issuer.cron_jobs()["rgwtls issue"].user == ISSUER_USER
        assert owner(issuer.config_dir / "wapi-password") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert owner(issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert not old.exists()
        assert moved.read_text() == '{"a note": "of an order in flight"}\n'
        assert owner(moved) == (ISSUER_USER, ISSUER_USER, 0o600)
        again = site.fleet.play()
        assert_clean(again)
        assert again.changed() == dict.fromkeys(HOSTS, 0), again.output
    finally:
        moved.unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)


def test_a_client_name_in_rgwtls_issuer_user_is_taken_as_the_cephx_user_and_the_play_says_so(site: Site) -> None:
    # Stopped by the next check (no certificate), so that nothing runs as the user `rgwtls`.
    play = site.fleet.play(
        "--limit", "rgw1", "-e", json.dumps({"rgwtls_issuer_user": "client.rgwtls-issuer", "rgwtls_certificates": []})
    )
    assert "rgwtls_issuer_user is client.rgwtls-issuer, a cephx user: that is rgwtls_issuer_cephx_user now" in (
        " ".join(play.output.split())
    )
    assert "Set rgwtls_certificates" in play.output
    assert play.recap["rgw1"]["changed"] == 0
