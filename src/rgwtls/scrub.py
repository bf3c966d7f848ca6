"""Whatever came from outside, made safe to print, log or store: one function, `clean`.

A pool record a gateway wrote, a runtime socket's answer, a CA's or WAPI's
error text, a hook's output: any of them may hold terminal escapes (a
gateway that retitles the operator's window and hides lines of rollout),
megabytes, or a private key (a socket that echoes the PEM it was sent).
`clean` escapes every control and invisible format character visibly,
removes anything that looks like key material, and bounds the length, in
that order: the cut never hides a key marker from the removal, and the
escapes count in the bound.

Key material is recognised two ways. A PEM private-key block is removed
from its BEGIN marker to its END marker, or to the end of the text if it has
none (truncated, or its newlines turned into spaces, "; " or a literal
"\\n"). A key without its markers (a socket echoing only some lines) is
recognised by its base64: whoever holds a key registers it with `remember`,
for the life of the process, and any run of it in a text is removed.

This module imports nothing of rgwtls: it sits below errors and log, which use it.
"""

from __future__ import annotations

import re
import threading
import unicodedata

KEY_REMOVED = "[key removed]"
# One field from outside (a record's error, a socket's answer); a record's writer may bound tighter.
LIMIT = 1000
# A whole line at the last line of defence (the log formatter, the CLI's error line): ours, with fields in it.
LINE = 4000
# A run of a registered key's base64 this long or longer is the key (a random match of 8 base64
# characters against a 4096-bit key's 3,200 has odds of about 1e-11).
_SHORT = 8
_WINDOW = 24
# PEM markers are upper case: "begin" and "private key" in a sentence are not a key.
_BEGIN = re.compile(r"-*\s*BEGIN[A-Z0-9 _]*PRIVATE[ _]KEY")
_END = re.compile(r"END[A-Z0-9 _]*PRIVATE[ _]KEY-*")
_BASE64_RUN = re.compile(rf"[A-Za-z0-9+/=]{{{_SHORT},}}")
_PEM_BODY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL)
# What Python's codec errors say: "'utf-8' codec can't decode byte 0xff in
# position 0: invalid start byte". The byte and its position are what the
# text held: from a secret file, one byte of the secret and where it sits.
_CODEC_ERROR = re.compile(
    r"'([\w-]+)' codec can't (?:decode|encode) "
    r"(?:bytes?(?: 0x[0-9a-fA-F]{2})?|characters?(?: '(?:[^'\\]|\\.)*'| \"[^\"]*\")?) "
    r"in position \d+(?:-\d+)?(?:: ([\w ()-]*))?"
)
# Control (Cc), format (Cf: bidi overrides, zero-width characters), line and paragraph separators,
# and lone surrogates (bytes kept by surrogateescape): none may reach a terminal as they are.
_HIDDEN = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
_lock = threading.Lock()
_bodies: list[str] = []
_windows: set[str] = set()


def remember(pem: str | bytes) -> None:
    """Treat the base64 of every private key in `pem` as key material in whatever `clean` sees from now on.

    Called by whoever holds a key (deploy installing a set, the haproxy swap
    sending a PEM): a socket that echoes some of its lines without the PEM
    markers is then recognised all the same.
    """
    text = pem.decode(errors="replace") if isinstance(pem, bytes) else pem
    for m in _PEM_BODY.finditer(text):
        body = "".join(m[1].split())
        if len(body) < _WINDOW:
            continue
        with _lock:
            if body in _bodies:
                continue
            _bodies.append(body)
            _windows.update(body[i : i + _WINDOW] for i in range(len(body) - _WINDOW + 1))


def forget_keys() -> None:
    """Drop every registered key (for tests: a process keeps what it registered)."""
    with _lock:
        _bodies.clear()
        _windows.clear()


def clean(text: object, limit: int = LIMIT, newlines: bool = False) -> str:
    """`text` (str, bytes, or anything with a str) as one printable line: escaped, without key material, bounded.

    Bytes that are not UTF-8 become visible `\\xNN` escapes; so do lone
    surrogates from a surrogateescape decode. A cut ends with a marker that
    says how much was cut. `newlines`: keep the newline, for a format that
    escapes it itself (a metric's label).
    """
    if isinstance(text, bytes | bytearray | memoryview):
        s = bytes(text).decode("utf-8", errors="backslashreplace")
    else:
        s = text if isinstance(text, str) else str(text)
    s = _without_keys(codec_errors(s))
    out = "\n".join(_escaped(line) for line in s.split("\n")) if newlines else _escaped(s)
    if len(out) > limit:
        # The marker counts in the bound, so that a text cleaned twice (a field, then its line) is cut once.
        head = out[: max(limit - 48, limit // 2)]
        head = re.sub(r"\\(?:x[0-9a-f]?|u[0-9a-f]{0,3}|U[0-9a-f]{0,7})?$", "", head)
        out = f"{head}...[{len(out) - len(head)} more characters cut]"
    return out


def name(raw: str | bytes, limit: int = 200) -> str:
    """An object's or host's name as it may be shown: cleaned and bounded (names are short)."""
    return clean(raw, limit)


def codec_errors(text: str) -> str:
    """The text with every codec error's bytes and position taken out: whatever failed to decode may be a secret."""
    return _CODEC_ERROR.sub(
        lambda m: f"text that is not valid {m[1]}" + (f" ({m[2].strip()})" if m[2] and m[2].strip() else ""), text
    )


def _without_keys(s: str) -> str:
    while (begin := _BEGIN.search(s)) is not None:
        end = _END.search(s, begin.end())
        s = s[: begin.start()] + KEY_REMOVED + ("" if end is None else s[end.end() :])
    if not _windows:
        return s
    return _BASE64_RUN.sub(lambda m: KEY_REMOVED if _is_key(m[0]) else m[0], s)


def _is_key(run: str) -> bool:
    if len(run) < _WINDOW:
        with _lock:
            return any(run in body for body in _bodies)
    return any(run[i : i + _WINDOW] in _windows for i in range(len(run) - _WINDOW + 1))


def _escaped(s: str) -> str:
    if s.isprintable() and s.isascii():
        return s
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in s)


def _escape(c: str) -> str:
    cp = ord(c)
    if 0xDC80 <= cp <= 0xDCFF:  # surrogateescape's stand-in for a byte that was not UTF-8
        return f"\\x{cp - 0xDC00:02x}"
    if c in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c]
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"
