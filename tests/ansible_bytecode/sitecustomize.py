"""Compiled Ansible modules kept from one task to the next, for the tests' local hosts only.

tests/ansible_helpers.py puts this directory on the PYTHONPATH of every
ansible command, and so of every module those commands run on the fleet's
local hosts. AnsiballZ ships each module with its module_utils in a zip, and
Python compiles whatever it imports from a zip again in every process:
ansible.module_utils.basic and the fifty modules under it cost each task about
a quarter of its CPU time (60 of 240 ms here), and the Ansible tests run some
thousands of tasks. With RGWTLS_TEST_BYTECODE naming a directory, each module
compiled is kept there by the hash of its source, and a later task loads it
instead of compiling it again. The code that runs is the same; only its
compiling is skipped. Without the variable, or on any error, Python compiles
as it always does.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import zipimport
from types import CodeType

_DIR = os.environ.get("RGWTLS_TEST_BYTECODE", "")
_compile = zipimport._compile_source  # type: ignore[attr-defined]


def _named(code: CodeType, filename: str) -> CodeType:
    """`code` as compiled from `filename`: each payload's zip has a path of its own, and tracebacks name it."""
    consts = tuple(_named(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _cached(pathname: str, source: bytes) -> CodeType:
    digest = hashlib.sha256(sys.version.encode() + b"\0" + source).hexdigest()
    path = os.path.join(_DIR, digest)
    try:
        with open(path, "rb") as f:
            return _named(marshal.load(f), pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code: CodeType = _compile(pathname, source)
    tmp = f"{path}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            marshal.dump(code, f)
        os.replace(tmp, path)  # whole or not at all, whichever task wrote it
    except OSError:
        pass
    return code


if _DIR and os.path.isdir(_DIR):
    zipimport._compile_source = _cached  # type: ignore[attr-defined]
