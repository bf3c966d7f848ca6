"""[[acme.fallback]] in the configuration: what loads, what is refused, and how a fallback sees [acme]."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from rgwtls import config
from rgwtls.errors import ConfigError
from tests.test_config import MINIMAL, write

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_fallbacks_load_in_order_with_their_own_keys(tmp_path: Path) -> None:
    cfg = config.load(
        write(
            tmp_path,
            """
[acme]
profile = "shortlived"
ca_bundle = "/etc/ssl/le.pem"
eab_kid = "le-kid"
eab_hmac_key_file = "/etc/rgwtls/le.hmac"

[[acme.fallback]]
directory = "https://acme.zerossl.com/v2/DV90"
eab_kid = "zs-kid"
eab_hmac_key_file = "/etc/rgwtls/eab-zerossl"

[[acme.fallback]]
directory = "https://dv.acme-v02.api.pki.goog/directory"
profile = "tlsserver"
"""
            + MINIMAL,
        )
    )
    assert [f.directory for f in cfg.acme.fallback] == [
        "https://acme.zerossl.com/v2/DV90",
        "https://dv.acme-v02.api.pki.goog/directory",
    ]
    zerossl = cfg.acme.as_fallback(cfg.acme.fallback[0])
    assert zerossl.directory == "https://acme.zerossl.com/v2/DV90"
    assert zerossl.eab(False)[:2] == ("zs-kid", "/etc/rgwtls/eab-zerossl")
    # Nothing of the primary's CA-specific keys carries over.
    assert zerossl.profile == ""
    assert zerossl.ca_bundle == ""
    assert zerossl.fallback == ()
    assert cfg.acme.as_fallback(cfg.acme.fallback[1]).profile == "tlsserver"
    # What is ours, not the CA's, does.
    assert zerossl.timeout == cfg.acme.timeout


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('directory = "https://acme-v02.api.letsencrypt.org/directory"', "is named twice"),
        ('directory = "https://x.example/dir"\neab_kid = "k"', "needs both eab_kid and eab_hmac_key_file"),
        ('ca_bundle = "/x"', "acme.fallback.directory: required"),
        ('directory = "https://x.example/dir"\nretries = 3', "acme.fallback.retries: unknown key"),
    ],
)
def test_a_bad_fallback_is_one_line_naming_the_key(tmp_path: Path, table: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        config.load(write(tmp_path, f"[[acme.fallback]]\n{table}\n" + MINIMAL))


@pytest.mark.parametrize("example", ["ca-fallback-zerossl.toml", "ca-fallback-google.toml"])
def test_fallback_examples_load(tmp_path: Path, example: str) -> None:
    cfg = config.load(write(tmp_path, (EXAMPLES / example).read_text()))
    assert cfg.acme.fallback


def test_replaces_goes_only_to_the_ca_that_issued_the_certificate_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARI's `replaces` names a certificate of one CA: another CA never saw it, and is not told it."""
    from rgwtls import issue
    from rgwtls.errors import CaUnavailable
    from rgwtls.store import CertSet

    fallback = "https://acme.zerossl.com/v2/DV90"
    cfg = config.load(write(tmp_path, f'[[acme.fallback]]\ndirectory = "{fallback}"\n' + MINIMAL))
    primary = cfg.acme.directory
    asked: list[tuple[str, str | None]] = []
    down = {primary}

    def obtain(ca_cfg: config.Config, *args: object) -> Any:
        decision = args[4]
        assert isinstance(decision, issue.Decision)
        asked.append((ca_cfg.acme.directory, decision.replaces))
        if ca_cfg.acme.directory in down:
            raise CaUnavailable("answers 503")
        return "issued"

    # Patched where the order uses them.
    monkeypatch.setattr(issue.order, "obtain", obtain)
    monkeypatch.setattr(issue.order, "Session", lambda *args: None)
    cert = cfg.certificates[0]
    cas = issue._CAs(cfg, cast(Any, None), staging=False)
    due = issue.Decision(True, "ARI", replaces="aYhba4dG.AIdlQyE")

    def renew(issued_by: str) -> Any:
        current = CertSet(cert.name, 3, "k", "c", "ch", cert.domains, "t", "rgwtls", issued_by)
        return issue._obtain_from_any(cas, cast(Any, None), cert, current, 4, due, tmp_path)

    # The primary's certificate: the primary is told, the fallback (asked when the primary is down) is not.
    assert renew(primary) == "issued"
    assert asked == [(primary, "aYhba4dG.AIdlQyE"), (fallback, None)]
    # A fallback's certificate: the primary, asked first, is not told; the fallback is.
    asked.clear()
    assert renew(fallback) == "issued"
    assert asked == [(primary, None), (fallback, "aYhba4dG.AIdlQyE")]
