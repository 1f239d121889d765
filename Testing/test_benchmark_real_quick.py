"""The real-image benchmark (Testing/benchmarks/real_images.py) in its quick mode: the same code as the full
benchmark on a tiny cohort, 1 seed and 3 iterations. Checks that the results files are well-formed and every
metric is within its valid range; no performance assertions. Skips when the real images cannot be fetched."""

import csv
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

METHODS = ["target-only", "naive", "cyclegan", "duiit"]
ALL = ["target-only", "naive", "cyclegan", "duiit", "duiit-fresh"]   # duiit-fresh: the authors' protocol


@pytest.fixture(scope="module")
def quick_work(tmp_path_factory):
    """The quick run's work folder (its cohort and bundles)."""
    return tmp_path_factory.mktemp("bench_work")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, quick_work):
    out, work = tmp_path_factory.mktemp("bench_results"), quick_work
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--quick", "--out", str(out),
                             "--work", str(work)], capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=300,
                            env=os.environ.copy())
    if result.returncode == 3:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "real_images.json").read_text()), (out / "real_images.md").read_text(), result


def _unit(value):
    return value is None or 0.0 <= value <= 1.0


def test_json_is_complete_and_in_range(quick):
    _, data, _, _ = quick
    assert len(data["runs"]) == 1
    run = data["runs"][0]
    assert run["status"] == "complete" and run["settings"]["quick"] is True
    assert run["command"].startswith("python -m Testing.benchmarks.real_images") and "--quick" in run["command"]
    assert run["machine"]["torch"] and run["machine"]["cores"] >= 1 and run["wall_seconds"] > 0
    assert "ONE real CT" in " ".join(run["cohort"]["caveats"])
    assert "T1 +30 to +60 % of the local brain" in " ".join(run["cohort"]["caveats"])  # the default MR lesion gain
    assert [r["method"] for r in run["records"]] == ALL
    counts = run["cohort"]["counts_by_split"]
    assert run["cohort"]["label_check"]["match"], run["cohort"]["label_check"]  # slice labels = the cohort's masks
    assert counts["target_train"]["patients"] >= 1 and counts["target_test"]["patients"] >= 1
    assert counts["target_unlabelled"] == {"patients": 1, "slices": counts["target_unlabelled"]["slices"]}
    assert "1 more CT patients" in " ".join(run["cohort"]["caveats"])  # the translators learn from unlabelled CT
    for record in run["records"]:
        test = record["test"]
        assert test["n_slices"] == counts["target_test"]["slices"]
        for key in ("auc", "auc_probability", "tied_scores_fraction", "accuracy", "balanced_accuracy", "sensitivity",
                    "specificity", "volume_auc",
                    "volume_accuracy"):
            assert _unit(test[key]), (record["method"], key, test[key])
        assert record["steps"] == run["settings"]["iterations"] * (2 if record["method"] == "cyclegan" else 1)
    for method in ALL:
        entry = run["summary"][method]
        assert _unit(entry["auc"]["mean"]) and entry["auc"]["n"] in (0, 1)
        assert _unit(entry["accuracy"]["mean"]) and entry["accuracy"]["std"] == 0.0


def test_fidelity_is_in_range(quick):
    _, data, _, _ = quick
    run = data["runs"][0]
    for record in run["records"]:
        if record["method"] not in ("cyclegan", "duiit"):
            assert "fidelity" not in record
            continue
        fidelity = record["fidelity"]
        paired = fidelity["paired_simulated_mr"]
        assert "SIMULATED" in paired["note"] and paired["n_volumes"] == 1
        assert paired["mean"]["mae_hu"] >= 0 and math.isfinite(paired["mean"]["psnr_db"])
        assert -1.0 <= paired["mean"]["ssim"] <= 1.0
        averaged = fidelity["paired_simulated_mr_8_views"]  # the same check, translated with --views 8
        assert averaged["mae_hu"] >= 0 and averaged["mae_hu"] != paired["mean"]["mae_hu"]
        # per-bin medians minimise the absolute error of any intensity map, the constant 20 HU map included
        oracle, constant = paired["reference_oracle_intensity_map"], paired["reference_constant_20hu_in_head"]
        assert 0 <= oracle["mae_hu"] <= constant["mae_hu"]
        for side in ("translated_mr", "real_ct_test"):
            stats = fidelity["unpaired"][side]
            assert set(stats) == {"air", "soft tissue", "bone"}
            assert abs(sum(s["fraction"] for s in stats.values()) - 1.0) < 1e-6
            for s in stats.values():
                assert s["mean_hu"] is None or -1100 <= s["mean_hu"] <= 3100
        assert 0 <= record["translated_source_train"]["auc"] <= 1 or record["translated_source_train"]["auc"] is None
        # lesion_erasure.py: does C see lesions, or only the levels where they can be?
        for key in ("auc_lesions_erased", "twin_auc", "twin_pair_win"):
            assert record["test"][key] is None or 0.0 <= record["test"][key] <= 1.0
    assert set(run["targets"]) >= {"duiit_auc_above_cyclegan", "duiit_auc_above_target-only",
                                   "duiit_twin_auc_above_cyclegan", "duiit_twin_auc_above_target-only", "all_met"}
    mae_target = run["targets"]["duiit_paired_mae_at_most_100_hu"]
    assert mae_target["views"] == 8
    assert mae_target["met"] == (min(mae_target["mae_hu"], mae_target["mae_hu_averaged"]) <= 100)


def test_view_averaging_tool_repeats_the_paired_check(quick, quick_work, tmp_path):
    from Testing.benchmarks.view_averaging import main
    _, data, _, _ = quick
    record = next(r for r in data["runs"][0]["records"] if r["method"] == "cyclegan")
    cohort = next(p.parent for p in quick_work.rglob("check_manifest.csv"))
    bundle = next(quick_work.rglob("cyclegan-seed0.duiit"))
    assert main([str(cohort), str(bundle), "--views", "1,8", "--json", str(tmp_path / "views.json")]) == 0
    rows = json.loads((tmp_path / "views.json").read_text())["bundles"][str(bundle)]
    fidelity = record["fidelity"]
    assert rows["1"]["mae_hu"] == pytest.approx(fidelity["paired_simulated_mr"]["mean"]["mae_hu"], rel=1e-5)
    assert rows["8"]["mae_hu"] == pytest.approx(fidelity["paired_simulated_mr_8_views"]["mae_hu"], rel=1e-5)


def test_lesion_erasure_tool_repeats_the_slice_auc(quick, quick_work, tmp_path):
    """With lesions kept, the tool scores the benchmark's own test split: the same AUC as the run recorded."""
    from Testing.benchmarks.lesion_erasure import main
    _, data, _, _ = quick
    record = next(r for r in data["runs"][0]["records"] if r["method"] == "cyclegan")
    cohort = next(p.parent for p in quick_work.rglob("check_manifest.csv"))
    bundle = next(quick_work.rglob("cyclegan-seed0.duiit"))
    assert main([str(cohort), str(bundle), "--json", str(tmp_path / "erasure.json")]) == 0
    figures = json.loads((tmp_path / "erasure.json").read_text())
    row = figures["models"][str(bundle)]
    recorded = record["test"]["auc"]
    if recorded is None or math.isnan(recorded):  # no lesion slice in the quick test split
        assert row["kept"] is None
    else:
        assert row["kept"] == pytest.approx(recorded, abs=1e-6)  # the results keep 6 digits
    for key in ("erased", "inverted", "twin_auc", "twin_pair_win"):
        assert row[key] is None or 0.0 <= row[key] <= 1.0
    assert figures["anatomy_auc"] is None or 0.0 <= figures["anatomy_auc"] <= 1.0


def test_markdown_names_methods_machine_and_simulation(quick):
    _, data, markdown, result = quick
    assert markdown.startswith("# Benchmark on real head images")
    assert "<!-- analysis -->" in markdown and "<!-- /analysis -->" in markdown
    for method in ALL:
        assert f"| {method} |" in markdown
    assert "SIMULATED" in markdown and "Command: `python -m Testing.benchmarks.real_images" in markdown
    assert data["runs"][0]["machine"]["cpu"] in markdown
    assert "AUC" in result.stdout and "HU over 8 views" in result.stdout
    assert "| duiit, averaged over 8 views (`--views 8`) |" in markdown
    assert "twin AUC (lesion slice vs itself erased) |" in markdown and "twin AUC" in result.stdout


def test_results_are_appended_and_analysis_kept(quick, tmp_path):
    """A second run is added beside the first (nothing measured is overwritten); hand-written analysis stays."""
    from Testing.benchmarks import real_images
    _, data, markdown, _ = quick
    run = data["runs"][0]
    (tmp_path / "real_images.md").write_text(markdown.replace("_(no analysis yet)_", "Hand-written analysis."))
    real_images.write_results(tmp_path, [run, dict(run, tag="second")])
    again = json.loads((tmp_path / "real_images.json").read_text())
    assert [r["tag"] for r in again["runs"]] == [run["tag"], "second"]
    text = (tmp_path / "real_images.md").read_text()
    assert "Hand-written analysis." in text and "## Run 1:" in text and "## Run 2: second" in text


def test_each_full_fifty_runs_goes_to_a_file_of_its_own(quick, tmp_path):
    """The results stay below git's comfortable file size however many runs accumulate; none is lost, none
    is counted twice when blocks of another size were archived before."""
    from Testing.benchmarks import real_images
    run = quick[1]["runs"][0]
    runs = [dict(run, tag=f"run {n}") for n in range(1, 206)]
    (tmp_path / "real_images-runs-001-100.json").write_text(json.dumps({"runs": runs[:100]}))
    real_images.write_results(tmp_path, runs)
    assert sorted(p.name for p in tmp_path.glob("real_images*.json")) == [
        "real_images-runs-001-050.json", "real_images-runs-051-100.json", "real_images-runs-101-150.json",
        "real_images-runs-151-200.json", "real_images.json"]
    newest = json.loads((tmp_path / "real_images.json").read_text())["runs"]
    assert [r["tag"] for r in newest] == [f"run {n}" for n in range(201, 206)]
    assert [r["tag"] for r in real_images.load_runs(tmp_path)] == [r["tag"] for r in runs]
    assert "## Run 205: run 205" in (tmp_path / "real_images.md").read_text()


def test_a_carried_cohort_is_reused_as_built(quick, tmp_path):
    """--cohort (for a GPU machine that cannot fetch the images) reads the cohort and how it was built."""
    _, data, _, _ = quick
    work = next(p for p in data["runs"][0]["command"].split() if "bench_work" in p)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--quick", "--cohort",
                             os.path.join(work, "cohort"), "--methods", "target-only", "--image-size", "32",
                             "--no-fresh-predictor", "--predictor-augment", "--out", str(out)],
                            capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=300,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "real_images.json").read_text())["runs"][0]
    first = data["runs"][0]
    assert run["settings"]["cohort_spec"] == first["settings"]["cohort_spec"]
    assert run["settings"]["cohort_seed"] == first["settings"]["cohort_seed"]
    assert run["settings"]["image_size"] == 32 and run["machine"]["device"] == "cpu"
    assert run["settings"]["predictor_augment"] and "training slices mirrored and shifted" in (
        out / "real_images.md").read_text()
    assert run["cohort"]["counts_by_split"] == first["cohort"]["counts_by_split"]
    for flag, value in (("--n-ct", "5"), ("--mr-lesion-gain", "0.1,0.2")):
        refused = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--cohort",
                                  os.path.join(work, "cohort"), flag, value], capture_output=True, text=True,
                                 encoding="utf-8", cwd=ROOT, timeout=120, env=os.environ.copy())
        assert refused.returncode == 2 and f"{flag} cannot change it" in refused.stderr
    refused = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--cohort",
                              os.path.join(work, "cohort"), "--mr-contrast-jitter", "0.1", "--no-mr-standard"],
                             capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=120,
                             env=os.environ.copy())
    assert refused.returncode == 2 and "cannot go with --no-mr-standard" in refused.stderr


def test_the_contrast_jitter_draws_new_gammas_for_each_training_seed(quick, tmp_path):
    """As `duiit train --seed` does, so that seeds measure the jitter's average, not one draw; one patient
    split for all seeds."""
    _, data, _, _ = quick
    work = next(p for p in data["runs"][0]["command"].split() if "bench_work" in p)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--quick", "--cohort",
                             os.path.join(work, "cohort"), "--methods", "cyclegan", "--seeds", "2",
                             "--mr-contrast-jitter", "0.15", "--image-size", "32", "--no-fresh-predictor",
                             "--out", str(out)],
                            capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=300,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "real_images.json").read_text())["runs"][0]
    first, second = (r["contrast_gammas"] for r in run["records"])
    assert first.keys() == second.keys()
    assert len(first) == run["cohort"]["counts_by_split"]["source_train"]["patients"]
    assert all(0.85 <= g <= 1.15 for g in [*first.values(), *second.values()]) and first != second
    assert run["settings"]["contrast_gammas"] == "per training seed"
    assert "drawn per training seed" in (out / "real_images.md").read_text()


def test_the_oracle_intensity_map_inverts_a_one_to_one_mr_and_not_an_ambiguous_one():
    from Testing.benchmarks.real_images import oracle_intensity_map
    rng = np.random.default_rng(0)
    ct = rng.choice([-1000.0, -100.0, 20.0, 40.0, 1000.0], size=(4, 16, 16)).astype(np.float32)
    head = np.ones(ct.shape, bool)
    one_to_one = {-1000.0: 10.0, -100.0: 900.0, 20.0: 500.0, 40.0: 400.0, 1000.0: 150.0}
    t1_like = {**one_to_one, 1000.0: 10.0}  # bone as dark as air: no intensity map can tell them apart
    for mapping, expected in ((one_to_one, 0.0), (t1_like, None)):
        mr = np.vectorize(mapping.get)(ct).astype(np.float32)
        (result,) = oracle_intensity_map([(mr, ct, head)])
        if expected is not None:
            assert result["mae_hu"] == pytest.approx(expected, abs=1e-3)
        else:
            assert result["mae_hu"] > 300  # 2/5 of the voxels are air or bone, a 2000 HU mix-up for half of them


def _stop_at(command, line_part, sig):
    """Run the benchmark and send `sig` when its log shows `line_part`; returns (exit code, log)."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env=os.environ.copy())
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line_part in line:
            process.send_signal(sig)
            break
    lines += process.stderr.readlines()
    return process.wait(timeout=60), "".join(lines)


def test_a_stopped_or_killed_run_resumes_from_its_checkpoint(quick, tmp_path):
    """--checkpoint-every: a run stopped by Ctrl-C, then one killed outright, resume when the same command runs
    again; the convergence curve measured before each stop is kept once, and the run trains to its steps."""
    _, data, _, _ = quick
    work = next(p for p in data["runs"][0]["command"].split() if "bench_work" in p)
    base = [sys.executable, "-m", "Testing.benchmarks.real_images", "--quick", "--cohort", os.path.join(work, "cohort"),
            "--methods", "cyclegan", "--iterations", "12", "--image-size", "32", "--checkpoint-every", "1",
            "--fidelity-every", "3", "--no-fresh-predictor", "--out", str(tmp_path / "out")]
    command = base + ["--work", str(tmp_path / "work")]
    checkpoint = tmp_path / "work" / "checkpoints" / "cyclegan-seed0.ckpt"

    code, log = _stop_at(command, "cyclegan/seed0 step 3: paired MAE", signal.SIGINT)
    assert code == 130 and f"the same command resumes from {checkpoint}" in log, log[-2000:]
    code, log = _stop_at(command, "cyclegan/seed0 step 9: paired MAE", signal.SIGKILL)
    assert code == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    assert f"resuming from {checkpoint}" in log and "step 3: paired MAE" not in log
    assert checkpoint.is_file() and not (tmp_path / "work" / "bundles").exists()

    again = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=300,
                           env=os.environ.copy())
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {checkpoint}" in again.stderr and "step 6: paired MAE" not in again.stderr
    run = json.loads((tmp_path / "out" / "real_images.json").read_text())["runs"][-1]
    record = run["records"][0]
    assert run["status"] == "complete" and record["resumed"] is True and record["steps"] == 2 * 12
    assert [point["step"] for point in record["fidelity_curve"]] == [3, 6, 9, 12]

    refused = subprocess.run(base, capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=120,
                             env=os.environ.copy())
    assert refused.returncode == 2 and "--checkpoint-every needs --work" in refused.stderr


def test_twins_join_their_patients_split_as_negatives(tmp_path):
    """--twins: each labelled lesion patient's lesion-free twin is in the cohort, labelled none, and the labels
    the core reads still match the cohort's masks."""
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "Testing.benchmarks.real_images", "--quick", "--twins",
                             "--mr-volumes", "colin27_t1", "--methods", "target-only", "--out", str(out),
                             "--work", str(work)], capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
                            timeout=300, env=os.environ.copy())
    if result.returncode == 3:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "real_images.json").read_text())["runs"][0]
    assert run["settings"]["cohort_spec"]["twins"] is True
    assert run["cohort"]["label_check"]["match"], run["cohort"]["label_check"]
    rows = list(csv.DictReader(open(next(work.rglob("manifest.csv")))))
    twins = [r for r in rows if r["patient_id"].endswith("-twin")]
    lesion_patients = [r for r in rows if r["label"] == "lesion"]
    assert len(twins) == len(lesion_patients) > 0
    assert all(t["label"] == "none" and not t["mask"] for t in twins)
    assert any("TWINS" in caveat for caveat in run["cohort"]["caveats"])
