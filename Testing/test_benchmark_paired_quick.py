"""Testing/benchmarks/paired_reference.py: its quick mode writes well-formed results, and its check pairs are
the real-image benchmark's check set (same volumes), so the two MAEs are comparable. Skips without the images."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT
from duiit import head_cohort, sample_data
from duiit.errors import DuiitError
from Testing.benchmarks import paired_reference


@pytest.fixture(scope="module")
def ct_volume():
    try:
        path = sample_data.fetch("cranium_ct")
    except DuiitError as exc:
        pytest.skip(f"the real sample images cannot be fetched here: {exc}")
    return head_cohort.load_real_volumes({"cranium_ct": path}, [head_cohort.SIMULATED_T1])[0]


@pytest.mark.parametrize("grid", ["tiny", "small"])
def test_check_pairs_are_the_benchmark_check_set(ct_volume, tmp_path, grid):
    manifest = head_cohort.build_cohort(tmp_path / "cohort", n_ct_patients=2, n_mr_patients=1, n_check=2, seed=0,
                                        size=grid, samples={}, real_volumes=[ct_volume, ct_volume])
    rows = list(csv.DictReader(open(manifest.parent / "check_manifest.csv")))
    pairs = paired_reference.simulated_pairs(ct_volume, [head_cohort.case_rng(0, "CHECK", i) for i in range(2)],
                                             grid)
    for row, (mr_unit, _, hu, head) in zip(rows, pairs):
        read = lambda name: sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / row[name])))  # noqa: E731
        assert np.array_equal(read("paired_ct").astype(np.float32), hu)
        assert np.array_equal(read("head_mask") > 0, head)
        assert mr_unit.shape == hu.shape and mr_unit.min() >= -1.0 and mr_unit.max() <= 1.0


def test_quick_mode_writes_results(ct_volume, tmp_path):
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.paired_reference", "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "paired_reference.json").read_text())["runs"][-1]
    assert run["settings"]["steps"] == 3 and run["settings"]["quick"] is True and run["curve"][-1]["step"] == 3
    # an untrained generator is no better than a constant; every MAE is a finite HU figure
    assert 0 < run["reference_constant_20hu_in_head_mae_hu"] < 1000
    assert run["reference_constant_20hu_in_head_mae_hu"] < run["final_check_mae_hu"] < 3000
    text = (tmp_path / "paired_reference.md").read_text()
    assert "PAIRED" in text and f"{run['final_check_mae_hu']:.1f}" in text
    assert 0 < run["final_check_mae_8_views_hu"] < 3000 and f"{run['final_check_mae_8_views_hu']:.1f}" in text
