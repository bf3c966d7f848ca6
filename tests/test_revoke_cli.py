"""`rgwtls revoke --reason` offers exactly the reasons the pool's record knows (RFC 5280's names)."""

from __future__ import annotations

import click

from rgwtls.cli import main
from rgwtls.revoked import REASONS


def test_the_reasons_offered_are_the_records_reasons() -> None:
    reason = next(p for p in main.commands["revoke"].params if p.name == "reason")
    assert isinstance(reason.type, click.Choice)
    assert set(reason.type.choices) == set(REASONS)
