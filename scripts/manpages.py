"""The man pages rgwtls(1) and rgwtls.toml(5), written from their sources when the package is built.

rgwtls(1) walks the click CLI itself, and rgwtls.toml(5) reads the tables of
docs/configuration.md, so neither can drift from what it describes: a command,
option or key added there is in the next package's pages.

    python scripts/manpages.py OUTDIR [--config-doc docs/configuration.md]

It runs with the Python that has rgwtls installed (the package's venv at build
time). It lives outside src/rgwtls: nothing in the product needs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
CONFIG_DOC = REPO / "docs" / "configuration.md"

# A table heading of docs/configuration.md: ## `[acme]`, ### `[[acme.fallback]]`, ### `[dns.infoblox]`.
_TABLE_HEADING = re.compile(r"^#{2,4} `(\[\[?[a-z0-9_.]+\]\]?)`\s*$")
# A row of a key table: | `key` | type | default | meaning |
_KEY_ROW = re.compile(r"^\| `([a-z0-9_]+)` \|(.*)\|\s*$")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def roff(text: str) -> str:
    """Text as roff reads it literally: backslashes escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def from_markdown(text: str) -> str:
    """A cell of docs/configuration.md as plain text: links by their words, code marks dropped."""
    text = _LINK.sub(r"\1", text)
    return text.replace("`", "").replace("**", "").replace("\\|", "|").strip()


def header(name: str, section: int, version: str) -> str:
    # SOURCE_DATE_EPOCH: the same tree gives the same page (reproducible builds).
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    manual = "User Commands" if section == 1 else "File Formats"
    return f'.TH "{name.upper()}" "{section}" "{when:%Y-%m-%d}" "rgwtls {version}" "{manual}"\n'


# -- rgwtls(1) ----------------------------------------------------------------------


def _options(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:  # hidden, or an argument
            continue
        opts, text = record
        yield f".TP\n.B {roff(opts)}\n{roff(text)}\n"


def _help(command: click.Command) -> str:
    return roff(click.unstyle(command.help or "").replace("\b\n", "").strip())


def command_page(group: click.Group, version: str) -> str:
    """rgwtls(1): the group's options, then each command with its own."""
    ctx = click.Context(group, info_name="rgwtls")
    out = [header("rgwtls", 1, version)]
    out.append(f".SH NAME\nrgwtls \\- {roff(group.help or '')}\n")
    out.append(".SH SYNOPSIS\n.B rgwtls\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fICOMMAND OPTIONS\\fR]\n")
    out.append(
        ".SH DESCRIPTION\nrgwtls keeps a Ceph RADOS Gateway fleet on ACME wildcard certificates: "
        "one issuer orders them through DNS\\-01 and stores them in a RADOS pool, and every gateway "
        "deploys them from there. Every failure is one line on standard error and exit status 1.\n"
    )
    out.append(".SH OPTIONS\n")
    out.extend(_options(group, ctx))
    out.append(".SH COMMANDS\n")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        out.append(f'.SS "rgwtls {name} [OPTIONS]"\n{_help(command)}\n')
        out.extend(_options(command, sub))
    out.append(
        ".SH FILES\n.TP\n.I /etc/rgwtls/rgwtls.toml\nThe configuration (see \\fBrgwtls.toml\\fR(5)); "
        "\\fB\\-\\-config\\fR or \\fBRGWTLS_CONFIG\\fR name another.\n"
        ".TP\n.I /etc/rgwtls/issuer.toml\nThe issuer's configuration, read by the unit "
        "\\fBrgwtls\\-issue.service\\fR.\n"
        ".TP\n.I /usr/share/doc/rgwtls/examples/rgwtls.toml\nA complete example.\n"
    )
    out.append(
        ".SH ENVIRONMENT\n.TP\n.B RGWTLS_CONFIG\nThe configuration file, unless \\fB\\-\\-config\\fR is given.\n"
    )
    out.append(
        ".SH SEE ALSO\n\\fBrgwtls.toml\\fR(5), \\fBsystemd.timer\\fR(5); the units "
        "\\fBrgwtls\\-issue.timer\\fR, \\fBrgwtls\\-deploy.timer\\fR and \\fBrgwtls\\-deploy\\-watch.service\\fR.\n"
    )
    return "".join(out)


# -- rgwtls.toml(5) -----------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    table: str  # as the heading writes it: [acme], [[acme.fallback]]
    name: str
    type: str
    default: str
    meaning: str


def config_keys(doc: str) -> list[Key]:
    """Every key of every table of docs/configuration.md, in the document's order."""
    keys: list[Key] = []
    table: str | None = None
    for line in doc.splitlines():
        heading = _TABLE_HEADING.match(line)
        if heading:
            table = heading.group(1)
            continue
        if line.startswith("#"):
            table = None  # a section that is not a table's: its rows are no keys
            continue
        row = _KEY_ROW.match(line)
        if row and table is not None:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.group(2))]
            if len(cells) < 3:
                continue
            kind, default, meaning = cells[0], cells[1], "|".join(cells[2:])
            keys.append(Key(table, row.group(1), from_markdown(kind), from_markdown(default), from_markdown(meaning)))
    return keys


def config_page(doc: str, version: str) -> str:
    """rgwtls.toml(5): each table, each key with its type, default and meaning."""
    keys = config_keys(doc)
    if not keys:
        raise SystemExit("manpages: no configuration keys found: has docs/configuration.md's table layout changed?")
    out = [header("rgwtls.toml", 5, version)]
    out.append(".SH NAME\nrgwtls.toml \\- the configuration of rgwtls\n")
    out.append(
        ".SH DESCRIPTION\nrgwtls reads one TOML file: \\fB\\-\\-config\\fR \\fIPATH\\fR, else "
        "\\fB$RGWTLS_CONFIG\\fR, else \\fI/etc/rgwtls/rgwtls.toml\\fR. An unknown key, a value of the "
        "wrong type or out of range, or a missing required key stops the command with one line naming "
        "the key and the file. The file must not be writable by group or others. Secrets are never "
        "values in it: they are read from the files it names, of mode 0600. Each table and key follows, "
        "as \\fItype\\fR, default \\fIvalue\\fR.\n"
    )
    table = None
    for key in keys:
        if key.table != table:
            table = key.table
            out.append(f".SH {roff(table)}\n")
        out.append(f".TP\n.B {roff(key.name)}\n\\fI{roff(key.type)}\\fR, default {roff(key.default)}.\n")
        out.append(f"{roff(key.meaning)}\n")
    out.append(
        ".SH FILES\n.TP\n.I /usr/share/doc/rgwtls/examples/rgwtls.toml\nA complete example with every key.\n"
        ".SH SEE ALSO\n\\fBrgwtls\\fR(1)\n"
    )
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write rgwtls.1 and rgwtls.toml.5 into OUTDIR.")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--config-doc", type=Path, default=CONFIG_DOC)
    args = parser.parse_args(argv)

    from rgwtls import __version__
    from rgwtls.cli import main as cli

    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "rgwtls.1").write_text(command_page(cli, __version__))
    (args.outdir / "rgwtls.toml.5").write_text(config_page(args.config_doc.read_text(), __version__))


if __name__ == "__main__":
    main()
