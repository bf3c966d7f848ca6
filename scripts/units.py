"""The package's systemd units, rendered from the Ansible role's own templates and variables.

One source for both: the role renders ansible/roles/rgwtls/templates/*.j2 for
each host, and the package is built with the same templates, filled in with
the same expressions of the role's vars/main.yml (the commands, the
descriptions, the watcher's stop timeout), evaluated with the package's paths.
What differs is what a package cannot know of its host, and says so here: the
role gives each host its own minute, the package a fixed random delay per host
(systemd's FixedRandomDelay), which spreads a fleet as the role's offsets do.

    python3 scripts/units.py OUTDIR

It needs only jinja2 and PyYAML (Debian's python3-jinja2 and python3-yaml at
package build time), not Ansible.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jinja2
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "ansible" / "roles" / "rgwtls"

# The role's defaults for the paths, and the package's own for what the role derives per host.
PACKAGE_VARS: dict[str, Any] = {
    "_rgwtls_bin": "/usr/bin/rgwtls",
    "rgwtls_config_file": "/etc/rgwtls/rgwtls.toml",
    "rgwtls_issuer_config_file": "/etc/rgwtls/issuer.toml",
    "rgwtls_deploy_watch_textfile": "",
    "_rgwtls_deploy_config_written": {"deploy": {}},
    "rgwtls_scheduler": "systemd",
    "_rgwtls_is_issuer": True,
    "rgwtls_cron_user": "root",
    "_rgwtls_issuer_user": "rgwtls",
    "rgwtls_issue_hour": "*",
    "_rgwtls_issue_minute": 0,
    "rgwtls_deploy_interval": 5,
    "_rgwtls_deploy_offset": 0,
}
# The issue asks for hourly and every 5 minutes; each host fires at a fixed random point of the period.
PACKAGE_SCHEDULES = {
    "issue": {"on_calendar": "hourly", "randomized_delay": "1h"},
    "deploy": {"on_calendar": "*:0/5", "randomized_delay": "5min"},
}
HEADER = "Rendered from the rgwtls Ansible role's templates by scripts/units.py when the package was built."


def _ternary(value: Any, yes: Any, no: Any) -> Any:
    return yes if value else no


def environment() -> jinja2.Environment:
    # As Ansible's template module renders: trim_blocks on, and its ternary filter.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701  systemd units, not HTML
    )
    env.filters["ternary"] = _ternary
    return env


def _evaluate(env: jinja2.Environment, value: Any, context: dict[str, Any]) -> Any:
    """One value of vars/main.yml: a string is a Jinja expression, as Ansible takes it."""
    if isinstance(value, str):
        return env.from_string(value).render(context).strip()
    return value


def render(outdir: Path) -> list[Path]:
    env = environment()
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    context = {**PACKAGE_VARS, "ansible_managed": HEADER}
    for name in ("_rgwtls_issue_command", "_rgwtls_deploy_command", "_rgwtls_watch_command"):
        context[name] = _evaluate(env, role_vars[name], context)
    context["_rgwtls_watch_stop_timeout"] = _evaluate(env, role_vars["_rgwtls_watch_stop_timeout"], context)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for timer in role_vars["_rgwtls_timers"]:
        item = {key: _evaluate(env, value, context) for key, value in timer.items()}
        item.update(PACKAGE_SCHEDULES[item["name"]])
        for template, suffix in (("rgwtls.service.j2", "service"), ("rgwtls.timer.j2", "timer")):
            path = outdir / f"rgwtls-{item['name']}.{suffix}"
            path.write_text(env.get_template(template).render({**context, "item": item}))
            written.append(path)
    path = outdir / str(role_vars["_rgwtls_watch_unit"])
    path.write_text(env.get_template("rgwtls-deploy-watch.service.j2").render(context))
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the package's systemd units into OUTDIR.")
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    render(args.outdir)


if __name__ == "__main__":
    main()
