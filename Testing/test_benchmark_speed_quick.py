"""The speed benchmark's quick mode runs and writes well-formed results (figures are not checked: timings
on a shared machine are not test material; see Testing/benchmarks/results/ for the real runs)."""

import json
import math
import subprocess
import sys

from conftest import ROOT


def test_quick_speed_benchmark_writes_well_formed_results(tmp_path):
    from Testing.benchmarks import speed
    data = speed.main(["--quick", "--device", "cpu", "--results-dir", str(tmp_path), "--output", "quick"])
    saved = json.loads((tmp_path / "quick.json").read_text())
    markdown = (tmp_path / "quick.md").read_text()
    assert saved["quick"] is True and saved["command"].startswith("python -m Testing.benchmarks.speed")
    assert {"cpu", "cpu_count", "torch", "torch_threads"} <= set(saved["machine"])
    for section in ("## Translation", "## Training", "## Peak memory"):
        assert section in markdown

    translation = saved["translation"]
    assert {(r["preset"], r["variant"]) for r in translation} >= {("small", "duiit"), ("small", "plain"),
                                                                    ("reference", "duiit"), ("reference", "plain")}
    for row in translation:
        assert row["median_s"] > 0 and math.isfinite(row["slices_per_s"]) and row["speedup_vs_plain"] > 0
        assert len(row["all_s"]) == row["repeats"]
    assert {r["method"] for r in saved["training"]} == {"duiit", "cyclegan"}
    for row in saved["training"]:
        assert row["iterations_per_s"] > 0 and math.isfinite(row["ratio_vs_cyclegan"])
    for row in saved["memory"]:
        assert row["hwm"] >= row["rss_before"] > 0 and row["voxels"] == math.prod(row["shape"])
        assert math.isfinite(row["slope_bytes_per_voxel"])
    assert set(data["summary"]) >= {"translation_speedup_small", "duiit_step_vs_cyclegan_small",
                                    "memory_slope_bytes_per_voxel"}


def test_run_all_lists_the_speed_benchmark():
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.run_all", "--list"], cwd=ROOT,
                            capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("speed:") or "\nspeed:" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "Testing.benchmarks.run_all", "--only", "nonesuch"], cwd=ROOT,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr
