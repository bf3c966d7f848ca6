"""The package's man pages and units, as scripts/manpages.py and scripts/units.py write them at build time."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from rgwtls.cli import main as cli

REPO = Path(__file__).resolve().parent.parent


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    _script("manpages").main([str(out)])
    rendered = {}
    for name in ("rgwtls.1", "rgwtls.toml.5"):
        res = subprocess.run(
            ["man", "--warnings", "-l", str(out / name)],
            capture_output=True,
            text=True,
            env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            check=True,
        )
        assert res.stderr == "", res.stderr  # groff finds nothing to warn about
        rendered[name] = res.stdout
    return rendered


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    return [opt for p in command.get_params(ctx) if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts]


def test_rgwtls_1_has_every_command_and_every_option(pages: dict[str, str]) -> None:
    text = pages["rgwtls.1"]
    ctx = click.Context(cli, info_name="rgwtls", **cli.context_settings)
    assert isinstance(cli, click.Group)
    for opt in _options(cli, ctx):
        assert re.search(rf"(^|[\s,]){re.escape(opt)}\b", text), opt
    sections = re.split(r"^\s+rgwtls (\S+) \[OPTIONS\]$", text, flags=re.M)
    described = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert set(described) == set(cli.list_commands(ctx))
    for name, section in described.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        for opt in _options(command, click.Context(command, info_name=name, parent=ctx)):
            assert re.search(rf"(^|[\s,]){re.escape(opt)}\b", section), f"{name} {opt}"


def test_rgwtls_toml_5_has_every_key_of_docs_configuration(pages: dict[str, str]) -> None:
    text = pages["rgwtls.toml.5"]
    doc = (REPO / "docs/configuration.md").read_text()
    keys = _script("manpages").config_keys(doc)
    tables = {k.table for k in keys}
    assert {"[acme]", "[[acme.fallback]]", "[ceph]", "[dns]", "[dns.infoblox]", "[deploy]", "[[certificate]]"} <= tables
    # Every row under a table's heading, counted apart from the generator's parser.
    rows = sum(
        len(re.findall(r"^\| `[a-z0-9_]+` \|", part, flags=re.M))
        for part in re.split(r"^#+ ", doc, flags=re.M)
        if part.startswith("`[")
    )
    assert len(keys) == rows
    assert rows > 100
    for table in tables:
        sections = re.split(r"^(\[\[?[a-z0-9_.]+\]\]?)$", text, flags=re.M)
        body = dict(zip(sections[1::2], sections[2::2], strict=True))[table]
        for key in (k for k in keys if k.table == table):
            assert re.search(rf"^\s+{re.escape(key.name)}\b", body, flags=re.M), f"{table} {key.name}"


def test_package_units_are_the_role_s_templates_rendered_with_the_package_s_paths(tmp_path: Path) -> None:
    _script("units").render(tmp_path)
    units = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(units) == {
        "rgwtls-issue.service",
        "rgwtls-issue.timer",
        "rgwtls-deploy.service",
        "rgwtls-deploy.timer",
        "rgwtls-deploy-watch.service",
    }
    assert (
        "User=rgwtls\nExecStart=/usr/bin/rgwtls --config /etc/rgwtls/issuer.toml issue\n"
        in units["rgwtls-issue.service"]
    )
    assert "User=" not in units["rgwtls-deploy.service"]
    assert "ExecStart=/usr/bin/rgwtls --config /etc/rgwtls/rgwtls.toml deploy\n" in units["rgwtls-deploy.service"]
    assert "OnCalendar=hourly\nPersistent=true\n" in units["rgwtls-issue.timer"]
    assert "OnCalendar=*:0/5\nPersistent=false\n" in units["rgwtls-deploy.timer"]
    assert (
        "ExecStart=/usr/bin/rgwtls --config /etc/rgwtls/rgwtls.toml -v deploy --watch\n"
        in units["rgwtls-deploy-watch.service"]
    )
    assert "TimeoutStopSec=240\n" in units["rgwtls-deploy-watch.service"]
    # Every line the role's templates hold literally is in the package's units.
    for template, unit in (
        ("rgwtls-deploy-watch.service.j2", "rgwtls-deploy-watch.service"),
        ("rgwtls.service.j2", "rgwtls-deploy.service"),
        ("rgwtls.timer.j2", "rgwtls-issue.timer"),
    ):
        literal = [
            line
            for line in (REPO / "ansible/roles/rgwtls/templates" / template).read_text().splitlines()
            if "{" not in line and line.strip()
        ]
        assert all(line in units[unit].splitlines() for line in literal), template
