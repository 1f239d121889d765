"""Testing/benchmarks/guidance_push.py on a checkpoint of the quick real-image benchmark with twins: the
figures it reports exist and are in range; the lesion masks it reads line up with the MR's lesions. Skips when
the real images cannot be fetched."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def run_module(*args):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", cwd=ROOT, timeout=300, env=os.environ.copy())


@pytest.fixture(scope="module")
def quick_checkpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("push_work")
    result = run_module("Testing.benchmarks.real_images", "--quick", "--twins", "--mr-volumes", "colin27_t1",
                        "--methods", "duiit", "--guide-classes", "lesion", "--guide-erased-lesions",
                        "--no-fresh-predictor", "--checkpoint-every", "2", "--work", work, "--out", work / "out")
    if result.returncode == 3:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((work / "out" / "real_images.json").read_text())["runs"][0]["settings"]
    assert settings["guide_erased_lesions"] is True
    return work / "cohort", work / "checkpoints" / "duiit-seed0.ckpt"


def test_guidance_push_reports_each_term_s_push_on_the_translated_lesions(quick_checkpoint, tmp_path):
    cohort, checkpoint = quick_checkpoint
    result = run_module("Testing.benchmarks.guidance_push", cohort, checkpoint, "--json", tmp_path / "push.json")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "push.json").read_text())["checkpoints"][str(checkpoint)]
    assert row["method"] == "duiit" and row["step"] == 3 and row["slices"] > 0
    assert row["source_contrast_vs_ring"] > 0.1  # the masks lie on the MR's bright simulated lesions
    assert set(row["push"]) == {"gan", "cycle", "guide", "total"}
    for figures in row["push"].values():
        assert figures["focus"] >= 0 and 0 <= figures["brightening_slices"] <= 1 and figures["rms"] > 0
    assert math.isfinite(row["translated_contrast_hu_vs_twin"]) and math.isfinite(row["guide_log_odds_twin"])
    assert list(row["guide_log_odds_by_contrast"]) == ["0", "0.5", "1", "1.5", "2", "3"]


def test_a_cohort_without_twins_is_refused_with_its_manifest_named(mr_cohort, quick_checkpoint):
    result = run_module("Testing.benchmarks.guidance_push", mr_cohort.parent, quick_checkpoint[1])
    assert result.returncode != 0 and "no MR training lesion case with a twin" in result.stderr
    assert str(mr_cohort.parent / "manifest.csv") in result.stderr
