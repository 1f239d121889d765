"""`duiit demo --quick`: the demo's pipeline end to end on phantoms (the real-image demo is `make demo`)."""

import json

import SimpleITK as sitk

from conftest import run_cli_process
from duiit.manifest import read_manifest


def test_quick_demo_writes_the_report_and_a_translation_on_the_source_geometry(tmp_path):
    out = tmp_path / "demo"
    result = run_cli_process("demo", "--quick", "-o", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.html", "side_by_side.png", "hu_histograms.png", "model.duiit", "translated_ct.nii.gz",
                 "translated_error_map.nii.gz"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["translated"] == str(out / "translated_ct.nii.gz")
    slice_metrics = next(iter(summary["metrics"].values()))["slice"]
    assert 0.0 <= slice_metrics["auc"] <= 1.0 and slice_metrics["n"] > 0
    source = next(c for c in read_manifest(out / "data" / "manifest.csv") if c.modality == "MR")
    mr, ct = sitk.ReadImage(str(source.path)), sitk.ReadImage(str(out / "translated_ct.nii.gz"))
    assert ct.GetSize() == mr.GetSize() and ct.GetSpacing() == mr.GetSpacing()
    assert ct.GetOrigin() == mr.GetOrigin() and ct.GetDirection() == mr.GetDirection()
    array = sitk.GetArrayFromImage(ct)
    assert -1100 <= array.min() and array.max() <= 3100        # Hounsfield units, not network units
    report = (out / "report.html").read_text()
    assert "translated CT" in report and "At a glance" in report and "Mean HU per tissue" in report


def _stats(air, soft, bone, bone_fraction):
    return {"air": {"mean_hu": air, "fraction": 0.03}, "soft tissue": {"mean_hu": soft, "fraction": 0.8},
            "bone": {"mean_hu": bone, "fraction": bone_fraction}}


def test_the_reports_verdict_weighs_the_paired_error_against_a_flat_grey_head():
    from duiit.demo import _at_a_glance
    real, metrics = _stats(-570, 16, 620, 0.2), {"test": {"slice": {"auc": 0.786, "n": 56}}}
    verdicts = {}
    for mae in (90.0, 150.0, 339.0):
        html = _at_a_glance(_stats(-560, 20, 850, 0.14), real, {"mae_hu": mae, "constant_head_mae_hu": 185.0},
                            metrics)
        assert "soft tissue 20 / 16 HU" in html and "bone is 14% / 20%" in html and "AUC 0.786 over 56" in html
        verdicts[mae] = html
    assert 'class="good"' in verdicts[90.0] and "within the target" in verdicts[90.0]
    assert 'class="bad"' in verdicts[150.0] and "better than a flat grey head" in verdicts[150.0]
    assert "worse than a flat grey head" in verdicts[339.0] and "(185 HU for painting" in verdicts[339.0]
    no_bone = _at_a_glance(_stats(-560, 20, float("nan"), 0.0), real, None, {})
    assert "bone none / 620 HU" in no_bone and "Paired check" not in no_bone
