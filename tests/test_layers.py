"""Imports in src/rgwtls run downward only, lazy imports included.

The layers follow the data: configuration at the bottom, then what talks to
one outside system (a gateway's TLS, the proxy, files, DNS), then the pool and
the ACME flow, then the commands, and the command line on top. A module may
import from a lower layer only; a module that is not listed fails the test, so
a new one is placed on purpose. No module imports another's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

LAYERS: list[set[str]] = [
    # Below everything: errors and log clean what they print with it.
    {"rgwtls.scrub"},
    {"rgwtls", "rgwtls.errors", "rgwtls.log", "rgwtls.command", "rgwtls.deadline", "rgwtls.unwatch"},
    # config: the values every section stands on, the sections (those holding others above them), the whole
    # file, the secrets it names, and the package that re-exports it all.
    {"rgwtls.config.values"},
    {
        "rgwtls.config.fallback",
        "rgwtls.config.ceph",
        "rgwtls.config.infoblox",
        "rgwtls.config.uddi",
        "rgwtls.config.rfc2136",
        "rgwtls.config.hook",
        "rgwtls.config.deploy",
        "rgwtls.config.check",
    },
    {"rgwtls.config.acme", "rgwtls.config.dns"},
    {"rgwtls.config.certificate"},
    {"rgwtls.config.file"},
    {"rgwtls.config.secrets"},
    {"rgwtls.config", "rgwtls.http"},
    {
        "rgwtls.probe",
        "rgwtls.proxy",
        "rgwtls.files",
        "rgwtls.propagation",
        "rgwtls.dns",
        "rgwtls.haproxy",
        "rgwtls.privileges",
    },
    {
        "rgwtls.certs",
        "rgwtls.revoked",
        "rgwtls.dns.hook",
        "rgwtls.dns.infoblox",
        "rgwtls.dns.rfc2136",
        "rgwtls.dns.uddi",
    },
    # The pool, from its layout up: the connection, its rooms, and `Pool`, the package, over all of them.
    {"rgwtls.store.layout", "rgwtls.store.holder", "rgwtls.store.clslock"},
    {"rgwtls.store.connection"},
    {"rgwtls.store.sets", "rgwtls.store.announce", "rgwtls.store.locks"},
    {"rgwtls.store.slots"},
    {"rgwtls.store", "rgwtls.dns.backends", "rgwtls.crl"},
    # acmeflow: the transport and what goes over it, one CA as one account, the order flow, and the package
    # that re-exports it.
    {"rgwtls.acmeflow.network"},
    {"rgwtls.acmeflow.objects"},
    {"rgwtls.acmeflow.client"},
    {"rgwtls.acmeflow.order"},
    {
        "rgwtls.validate",
        "rgwtls.backoff",
        "rgwtls.targets",
        "rgwtls.acmeflow",
        "rgwtls.persist",
        "rgwtls.fence",
        "rgwtls.health",
        "rgwtls.revocation",
    },
    # issue: the clock at the bottom, the rooms each step stands on, the order with its CAs, what an earlier
    # run left, the protocol on top of them, and the package that re-exports it all.
    {"rgwtls.issue.clock"},
    {"rgwtls.issue.session", "rgwtls.issue.schedule", "rgwtls.issue.journal"},
    {"rgwtls.issue.decide", "rgwtls.issue.persist", "rgwtls.issue.kept"},
    {"rgwtls.issue.order"},
    {"rgwtls.issue.earlier"},
    {"rgwtls.issue.run"},
    {"rgwtls.activate"},
    {"rgwtls.restart"},
    {"rgwtls.deploy", "rgwtls.issue", "rgwtls.status"},
    {"rgwtls.metrics", "rgwtls.check", "rgwtls.fleet"},
    {"rgwtls.recorded"},
    {"rgwtls.watch", "rgwtls.revoke"},
    {"rgwtls.run"},
    {"rgwtls.cli"},
    {"rgwtls.__main__"},
]
LAYER = {module: n for n, layer in enumerate(LAYERS) for module in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str) -> list[tuple[int, str, list[str]]]:
    """Every import of an rgwtls module anywhere in the source: (line, module, names imported from it)."""
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "rgwtls"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rgwtls":
            module = node.module or ""
            names = [a.name for a in node.names]
            # `from rgwtls import log` imports the module rgwtls.log; `from rgwtls import __version__` the package.
            subs = [n for n in names if f"{module}.{n}" in LAYER]
            found += [(node.lineno, f"{module}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest:
                found.append((node.lineno, module, rest))
    return found


MODULES = sorted(SRC.joinpath("rgwtls").rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    missing = sorted({module_name(p) for p in MODULES} - set(LAYER))
    assert not missing, f"place these in LAYERS: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_a_module_imports_only_from_layers_below_it(path: Path) -> None:
    here = module_name(path)
    wrong = [
        f"{path.name}:{line} imports {target} (layer {LAYER.get(target)}) from layer {LAYER[here]}"
        for line, target, _ in imports(path.read_text())
        if target != here and LAYER.get(target, len(LAYERS)) >= LAYER[here]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_a_module_imports_no_private_names_of_another(path: Path) -> None:
    wrong = [
        f"{path.name}:{line} imports {name} from {target}"
        for line, target, names in imports(path.read_text())
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions() -> None:
    """The rule is only as good as its parser: a lazy import counts like any other."""
    source = "def f():\n    from rgwtls.check import Threshold\n    from rgwtls import deploy, __version__\n"
    seen = imports(source)
    assert seen == [(2, "rgwtls.check", ["Threshold"]), (3, "rgwtls.deploy", []), (3, "rgwtls", ["__version__"])]
