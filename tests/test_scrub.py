"""rgwtls.scrub.clean with hostile strings, random bytes, and the keys of RSA and EC certificates."""

from __future__ import annotations

import functools
import json
import random
import unicodedata
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rgwtls import scrub
from rgwtls.scrub import KEY_REMOVED, clean

HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def printable(text: str) -> bool:
    return not any(unicodedata.category(c) in HIDDEN for c in text)


@functools.cache
def key_pem(kind: str) -> str:
    """A key as deploy holds it: PKCS#8 (what issue stores), or the traditional RSA and SEC1 EC forms."""
    if kind.startswith("rsa"):
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(65537, 2048)
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    formats = serialization.PrivateFormat
    fmt = formats.PKCS8 if kind.endswith("pkcs8") else formats.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


KINDS = ["rsa-pkcs8", "rsa-traditional", "ec-pkcs8", "ec-traditional"]


def body_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def leaks(pem: str, text: str) -> list[str]:
    """Every line of the key's base64 (or 24 characters of one) that `text` still holds."""
    found = [line for line in body_lines(pem) if len(line) >= 16 and line in text]
    body = "".join(body_lines(pem))
    found += [body[i : i + 24] for i in range(0, len(body) - 24, 12) if body[i : i + 24] in text]
    return found


@pytest.fixture(autouse=True)
def no_keys_remembered() -> Iterator[None]:
    scrub.forget_keys()
    yield
    scrub.forget_keys()


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("gw1\x1b]0;owned\x07", "gw1\\x1b]0;owned\\x07"),  # retitles the window
        ("ok\x1b[2J\x1b[H", "ok\\x1b[2J\\x1b[H"),  # clears the screen
        ("a\rERROR: fake", "a\\rERROR: fake"),
        ("a\nERROR: fake line", "a\\nERROR: fake line"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m", "c1\\x9b31m"),  # CSI as one C1 byte
        ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
        ("isolate \u2066x\u2069", "isolate \\u2066x\\u2069"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("sep\u2028line", "sep\\u2028line"),
        ("surrogate \udcff", "surrogate \\xff"),
        (b"bytes \xff\xfe \x1b ok", "bytes \\xff\\xfe \\x1b ok"),
        ("caf\u00e9 \u00fcber 10.0.0.1:443", "caf\u00e9 \u00fcber 10.0.0.1:443"),  # printable text stays as it is
    ],
)
def test_control_and_invisible_characters_are_escaped_visibly(hostile: str | bytes, shown: str) -> None:
    out = clean(hostile)
    assert out == shown
    assert printable(out)


def test_a_long_text_is_cut_to_its_bound_with_a_visible_marker_and_a_second_clean_changes_nothing() -> None:
    out = clean("x" * 6115, 200)
    assert len(out) <= 200
    assert out.endswith("more characters cut]")
    assert clean(out, 200) == out
    # A cut never leaves half an escape behind.
    cut = clean("\x1b" * 500, 100)
    assert printable(cut)
    assert cut.split("...[")[0].endswith("\\x1b")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "shape",
    ["as is", "newlines as spaces", "newlines as escaped \\n", "lines joined by '; '", "truncated", "cut mid-marker"],
)
def test_a_pem_private_key_block_is_removed_whatever_its_shape_without_registering_it(kind: str, shape: str) -> None:
    pem = key_pem(kind)
    text = {
        "as is": pem,
        "newlines as spaces": pem.replace("\n", " "),
        "newlines as escaped \\n": pem.replace("\n", "\\n"),
        "lines joined by '; '": "; ".join(pem.splitlines()),
        "truncated": pem[: len(pem) // 2],
        "cut mid-marker": pem[: pem.index("-----END") + 9],
    }[shape]
    out = clean(f"HAProxy refused the new PEM for /etc/haproxy/rgw.pem: set ssl cert x <<\n{text}\nthe end")
    assert KEY_REMOVED in out
    assert not leaks(pem, out), out
    assert out.startswith("HAProxy refused the new PEM for /etc/haproxy/rgw.pem: set ssl cert x <<")
    assert printable(out)


@pytest.mark.parametrize("kind", KINDS)
def test_lines_of_a_remembered_key_are_removed_without_their_markers(kind: str) -> None:
    pem = key_pem(kind)
    scrub.remember(pem)
    lines = body_lines(pem)
    echoes = [
        "\n".join(lines),  # the payload without its markers
        "; ".join(lines[1:3]),  # two lines, as _one_line joins them
        lines[0][:30],  # part of a line
        "\\n".join(lines),  # escaped newlines make runs that start with an 'n'
        "x" + lines[-1],  # glued to what came before
    ]
    for echo in echoes:
        out = clean(f"answer: {echo} :end")
        assert not leaks(pem, out), (echo, out)
        assert KEY_REMOVED in out
        assert out.startswith("answer: ")
    # The last line of a key may be short: alone, it is removed too.
    assert clean(lines[-1]) == KEY_REMOVED or len(lines[-1]) < 8


def test_another_keys_base64_and_ordinary_text_are_left_alone() -> None:
    scrub.remember(key_pem("rsa-pkcs8"))
    other = body_lines(key_pem("ec-pkcs8"))[0]
    ordinary = (
        "rollout: gw1 (127.0.0.1:8443): serving (serves the pool's certificate since 2026-12-04T10:00:05+00:00) "
        f"certificate 3f1c9e0a4b2d8c7e SGVsbG8gd29ybGQ= {other}"
    )
    assert clean(ordinary) == ordinary


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_with_a_remembered_key_inside_come_out_printable_bounded_and_without_the_key(seed: int) -> None:
    rng = random.Random(seed)
    pem = key_pem(KINDS[seed])
    scrub.remember(pem)
    lines = body_lines(pem)
    for _ in range(500):
        noise = [rng.randbytes(rng.randrange(0, 200)) for _ in range(3)]
        payload = rng.choice(
            [
                b"",
                rng.choice(lines).encode(),
                "\n".join(rng.sample(lines, 3)).encode(),
                pem.encode(),
                pem.encode()[: rng.randrange(len(pem))],
            ]
        )
        raw = noise[0] + payload + noise[1] + noise[2]
        limit = rng.choice([80, 1000])
        for text in (raw, raw.decode(errors="surrogateescape"), raw.decode(errors="replace")):
            out = clean(text, limit)
            assert printable(out), repr(out)
            assert len(out) <= limit
            assert not leaks(pem, out), repr(out)


def hostile_response(doc: object) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp.reason, resp.url = 400, "Bad Request", "https://wapi.example/api/ddi/v1/dns/record"
    resp.headers["Content-Type"] = "application/json"
    resp._content = json.dumps(doc).encode()
    resp.request = requests.Request("POST", resp.url).prepare()
    return resp


def test_what_a_wapi_a_uddi_or_a_ca_said_reaches_the_line_cleaned() -> None:
    """The WAPI's text, Universal DDI's message and a CA's problem detail are quoted in lines: cleaned where quoted."""
    from acme import messages

    from rgwtls import acmeflow
    from rgwtls.dns import infoblox, uddi

    said = f"no\x1b]0;owned\x07 {key_pem('ec-pkcs8')}" + "x" * 5000
    lines = [
        infoblox._describe(hostile_response({"text": said, "code": "Client.Ibap.Data"})),
        uddi._describe(hostile_response({"error": [{"message": said}]})),
    ]
    problem = messages.Error.from_json({"type": "urn:ietf:params:acme:error:dns", "detail": said})
    challenge = messages.ChallengeBody.from_json(
        {"type": "dns-01", "url": "https://ca/c", "status": "invalid", "token": "a" * 43, "error": problem.to_json()}
    )
    lines.append(acmeflow._challenge_error(messages.Authorization(challenges=(challenge,))))
    for line in lines:
        assert printable(line), line
        assert "PRIVATE KEY" not in line
        assert len(line) <= 500
        assert line.startswith(("no\\x1b]0;owned\\x07 [key removed]", "POST dns/record answered 400"))


@pytest.mark.parametrize("debug", [False, True])
def test_the_log_formatter_cleans_every_line_a_path_forgot_to_clean(
    debug: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of defence: a key or an escape in any message is removed or escaped; a traceback stays whole."""
    import logging

    from rgwtls import log as logsetup

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logsetup.setup(0, debug)
        logging.getLogger("rgwtls.x").warning("answer %s", f"\x1b]0;owned\x07{key_pem('rsa-pkcs8').strip()}")
        try:
            raise ValueError("first line\nsecond line")
        except ValueError:
            logging.getLogger("rgwtls.x").exception("failed")
    finally:
        root.handlers[:], root.level = saved
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.endswith("WARNING rgwtls.x: answer \\x1b]0;owned\\x07[key removed]" if debug else "")
    assert first == "WARNING: answer \\x1b]0;owned\\x07[key removed]" or debug
    assert "\x1b" not in err
    assert "PRIVATE KEY" not in err
    # --debug shows the traceback, as it is; without it no traceback ever reaches cron mail.
    assert ("Traceback (most recent call last):" in err) == debug
