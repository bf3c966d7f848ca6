"""rgwtls in the issue benchmark: `rgwtls issue --force` with one DNS back end, or the cron no-op."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import BenchError, Run
from bench.issue.tool import Before, Tool, leaf_facts
from devsite.site import POOL, ZONE, Stack

# Python run by `python -c`: import every rgwtls module (so that the profile holds no import
# time), then run the CLI under cProfile and write the profile to argv[1].
PROFILE_DRIVER = """
import cProfile, importlib, pkgutil, sys
import rgwtls
for m in pkgutil.walk_packages(rgwtls.__path__, "rgwtls."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from rgwtls.cli import main
out, args = sys.argv[1], sys.argv[2:]
sys.argv = ["rgwtls", *args]
prof = cProfile.Profile()
code = 0
try:
    prof.runcall(main, args, prog_name="rgwtls")
except SystemExit as e:
    code = e.code
finally:
    prof.dump_stats(out)
sys.exit(code)
"""


def rgwtls_config(stack: Stack, provider: str, hook: Path, name: str = "") -> Path:
    """The tests' config for one back end; the `hook` back end runs `hook`."""
    settings = stack.settings(provider)
    if provider == "hook":
        settings["dns"]["hook"] = {"command": str(hook)}
    return stack.write_config(settings, name or f"rgwtls-{provider}.toml")


class Rgwtls(Tool):
    def __init__(self, exe: Path, stack: Stack, provider: str, config: Path, force: bool = True) -> None:
        self.exe = exe
        self.stack = stack
        self.provider = provider
        self.config = config
        self.force = force
        self.issues = force
        self.uses_hook = force and provider == "hook"
        self.key = f"rgwtls-{provider}" if force else "rgwtls-noop"
        self.label = f"rgwtls issue --force ({provider})" if force else "rgwtls issue, nothing due (cron no-op)"

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        args = ["--config", str(self.config), "issue", *(["--force"] if self.force else [])]
        if profile is not None:
            return [sys.executable, "-c", PROFILE_DRIVER, str(profile), *args]
        if importtime:  # the console script itself, as cron runs it (no runpy)
            return [sys.executable, "-X", "importtime", str(self.exe), *args]
        return [str(self.exe), *args]

    def stored(self) -> dict[str, Any] | None:
        ioctx = self.stack.ceph.admin().open_ioctx(POOL)
        try:
            try:
                raw = bytes(ioctx.read(f"{ZONE}/current", 1 << 20))
            except Exception:
                return None
            doc: dict[str, Any] = json.loads(raw)
            return doc
        finally:
            ioctx.close()

    def current(self) -> tuple[int | None, int | None]:
        doc = self.stored()
        if doc is None:
            return None, None
        serial = leaf_facts(str(doc["cert_pem"]), str(doc["key_pem"]), f"pool {POOL} {ZONE}/current")
        return serial, int(doc["generation"])

    def verify(self, before: Before, run: Run) -> None:
        super().verify(before, run)
        if not self.force:
            return
        _, generation = self.current()
        want = (before.generation or 0) + 1
        if generation != want:
            raise BenchError(f"{self.label}: expected pool generation {want}, found {generation}\n{run.tail()}")
