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
    assert "translated CT" in (out / "report.html").read_text()
