"""Smoke run of the scheduling benchmark (bench/scheduler.py) at a tiny size: it runs and reports
numbers. Not a timing test; the figures are in bench/RESULTS.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scheduler.py"


def test_the_benchmark_runs_and_reports_percentiles(capsys: object) -> None:
    spec = importlib.util.spec_from_file_location("bench_scheduler", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--campaigns", "4", "--recipients", "400", "--decisions", "20",
                       "--import-size", "200", "--import-runs", "1"])
    for part in (result["tick"]["decision"], result["tick"]["safety_pass"],
                 result["import"]["total"]):
        assert part["n"] > 0 and 0 < part["p50_ms"] <= part["p99_ms"] <= part["max_ms"]
    assert result["tick"]["calls_claimed"] > 0
