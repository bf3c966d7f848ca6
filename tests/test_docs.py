"""The docs tell the truth: their commands and options exist, and every config key is documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

from rgwtls.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def options_of(cmd: click.Command) -> set[str]:
    return {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


COMMAND_LINE = re.compile(
    r"\brgwtls((?:\s+-[-\w]+)*)\s+(issue|deploy|status|check|persist|rollout|revoke)\b([^`|;&)]*)"
)


def invocations() -> list[tuple[str, str, list[str]]]:
    """(doc, command, options) for every `rgwtls ...` command line in the docs."""
    found = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            for m in COMMAND_LINE.finditer(line):
                global_opts = m.group(1).split()
                own = [w.split("=")[0] for w in m.group(3).split() if w.startswith("-")]
                found.append((doc.name, m.group(2), global_opts + [f"{m.group(2)}:{o}" for o in own]))
    return found


def test_docs_show_every_command() -> None:
    seen = {cmd for _, cmd, _ in invocations()}
    assert seen == set(main.commands)


@pytest.mark.parametrize(("doc", "command", "opts"), invocations())
def test_documented_command_line_exists_in_the_help(doc: str, command: str, opts: list[str]) -> None:
    group_opts = options_of(main)
    sub = main.commands[command]
    for opt in opts:
        if ":" in opt:
            assert opt.split(":", 1)[1] in options_of(sub), f"{doc}: rgwtls {command} {opt}"
        else:
            assert opt in group_opts, f"{doc}: rgwtls {opt}"


def flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            out += flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out += flatten(item, f"{prefix}{k}.")
        else:
            out.append((prefix.rstrip("."), k))
    return out


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^#{2,3} `\[{1,2}([\w.]+)\]{1,2}`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_key_of_the_example_config_is_documented_in_its_section() -> None:
    example = tomllib.loads((ROOT / "examples" / "rgwtls.toml").read_text())
    documented = sections((ROOT / "docs" / "configuration.md").read_text())
    missing = [f"{s}.{k}" for s, k in flatten(example) if f"| `{k}` |" not in documented.get(s, "")]
    assert missing == []


def test_every_config_field_is_in_the_example() -> None:
    import dataclasses

    from rgwtls import config

    example = tomllib.loads((ROOT / "examples" / "rgwtls.toml").read_text())
    have = set(flatten(example))

    def walk(cls: Any, prefix: str) -> list[tuple[str, str]]:
        out = []
        for f in dataclasses.fields(cls):
            if f.name == "fallback":
                continue  # tables of their own, in examples/ca-fallback-*.toml: see the test below
            if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else getattr(config, f.type, None)):
                out += walk(getattr(config, f.type) if isinstance(f.type, str) else f.type, f"{prefix}.{f.name}")
            else:
                out.append((prefix, f.name))
        return out

    fields = walk(config.AcmeConfig, "acme") + walk(config.CephConfig, "ceph") + walk(config.DnsConfig, "dns")
    fields += walk(config.DeployConfig, "deploy") + walk(config.CheckConfig, "check")
    fields += walk(config.CertificateConfig, "certificate")
    assert sorted(set(fields) - have) == []


def test_every_fallback_key_is_documented_and_in_an_example() -> None:
    import dataclasses

    from rgwtls import config

    documented = sections((ROOT / "docs" / "configuration.md").read_text()).get("acme.fallback", "")
    keys = [f.name for f in dataclasses.fields(config.FallbackCa)]
    assert [k for k in keys if f"| `{k}` |" not in documented] == []
    used = set()
    for example in (ROOT / "examples").glob("ca-fallback-*.toml"):
        for table in tomllib.loads(example.read_text())["acme"]["fallback"]:
            used |= set(table)
    assert {"directory", "eab_kid", "eab_hmac_key_file"} <= used


def test_the_architecture_table_lists_every_module_in_its_layer() -> None:
    """docs/architecture.md's table of the code is tests/test_layers.py's LAYERS, module for module."""
    from tests.test_layers import LAYER

    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `([\w.]+)` \|", text, re.MULTILINE)
    documented = {m if m == "rgwtls" else f"rgwtls.{m}": int(n) for n, m in rows}
    assert len(documented) == len(rows), "a module is in the table twice"
    assert documented == LAYER
