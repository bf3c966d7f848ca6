"""bench/ab.py compares two versions of the code: REF's src/ is exported, run by the same venv, and removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ab
from bench.harness import BenchError


def test_ref_s_src_is_exported_and_its_side_imports_it_not_the_venv_s(tmp_path: Path) -> None:
    commit = ab.export_src("HEAD", tmp_path)
    assert len(commit) == 40
    side = ab.Side("A", tmp_path / "src")
    assert (side.src / "rgwtls" / "cli.py").is_file()
    side.check_imports_its_own()


def test_a_ref_that_is_no_commit_stops_the_benchmark(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no commit"):
        ab.export_src("no-such-ref-4c1e", tmp_path)


def test_the_ratio_is_the_median_of_each_round_s_with_its_spread() -> None:
    assert ab.ratios([1.0, 2.0, 1.0], [1.1, 2.0, 0.8]) == pytest.approx((1.0, 0.8, 1.1))
