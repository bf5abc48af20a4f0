"""Smoke runs of the benchmarks (bench/scheduler.py, bench/cluster.py) at a tiny size: they run
and report numbers. Not timing tests; the figures are in bench/RESULTS.md."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

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


CLUSTER = BENCH.with_name("cluster.py")


@pytest.mark.postgres
def test_the_cluster_benchmark_runs_two_nodes_within_the_limit(tmp_path: Path) -> None:
    """bench/cluster.py at a tiny size (2 node processes, 3 s): it runs, both nodes place
    calls, and no sample of the open attempts exceeds the limit."""
    out = tmp_path / "cluster.json"
    proc = subprocess.run([sys.executable, str(CLUSTER), "--nodes", "2", "--recipients", "400",
                           "--limit", "20", "--seconds", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 and "Connection refused" in proc.stderr:
        pytest.skip("PostgreSQL is unreachable")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["fake"]
    assert row["violations"] == 0 and 0 < row["peak_open"] <= 20 and row["samples"] > 0
    assert all(n > 0 for n in row["calls_per_node"]) and row["decisions"] > 0
