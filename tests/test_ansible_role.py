"""The Ansible role ansible/roles/rgwtls on its own, without a fleet: its lint, its documented options, a template.

Apart from tests/test_ansible*.py, whose tests share a converged fleet per module
(tests/ansible_site.py): these need none, and under xdist they run beside them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tomllib
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from tests.ansible_helpers import ANSIBLE_DIR, ROLE_DIR, ansible_env


def test_defaults_and_argument_specs_document_the_same_options() -> None:
    defaults = yaml.safe_load((ROLE_DIR / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLE_DIR / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, spec in options.items():
        assert name.startswith("rgwtls_"), name
        assert spec["type"], name
        assert spec["description"], name
        assert spec["default"] == defaults[name], name


def test_ansible_lint_passes_the_production_profile(tmp_path: Path) -> None:
    res = subprocess.run(
        ["ansible-lint", "--offline", "--profile", "production", str(ANSIBLE_DIR)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        cwd=ANSIBLE_DIR.parent,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr


def test_fallback_cas_render_as_acme_fallback_tables_naming_their_key_files_never_the_keys(tmp_path: Path) -> None:
    """The role's own tasks and template, outside a converge: rgwtls learns [[acme.fallback]] in config.py."""
    key = secrets.token_urlsafe(32)
    fallbacks = [
        {"directory": "https://acme.zerossl.com/v2/DV90", "eab_kid": "kid-z", "eab_hmac_key": key},
        {"directory": "https://dv.acme-v02.api.pki.goog/directory", "profile": "", "preferred_chain": "GTS Root R1"},
    ]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"rgws": {"hosts": {"rgw1": {}}}}}}))
    out = tmp_path / "issuer.toml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "rgw1",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "rgwtls_acme_fallbacks": fallbacks,
                        "rgwtls_certificates": [{"name": "cog.example.org", "domains": ["cog.example.org"]}],
                        "rgwtls_trusted_roots": "/etc/rgwtls/roots.pem",
                    },
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {
                                "name": str(ROLE_DIR),
                                "tasks_from": "fallbacks",
                                "public": True,
                            }
                        },
                        {
                            "ansible.builtin.template": {
                                "src": str(ROLE_DIR / "templates/rgwtls.toml.j2"),
                                "dest": str(out),
                            },
                            "vars": {"_rgwtls_config_role": "issuer", "_rgwtls_config": "{{ _rgwtls_issuer_config }}"},
                        },
                    ],
                }
            ]
        )
    )
    res = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert key not in res.stdout + res.stderr
    doc = tomllib.loads(out.read_text())
    assert doc["acme"]["fallback"] == [
        {
            "directory": "https://acme.zerossl.com/v2/DV90",
            "eab_kid": "kid-z",
            "eab_hmac_key_file": "/etc/rgwtls/eab-hmac-fallback-0",
        },
        {"directory": "https://dv.acme-v02.api.pki.goog/directory", "preferred_chain": "GTS Root R1"},
    ]
    assert key not in out.read_text()
    assert doc["deploy"] == {"state_dir": "/var/lib/rgwtls-issuer", "trusted_roots": "/etc/rgwtls/roots.pem"}
    assert doc["acme"]["run_as"] == "rgwtls"
    assert doc["ceph"]["user"] == "client.rgwtls-issuer"
