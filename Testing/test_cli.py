"""Every command end to end as a user runs it, and every bad input: one line, non-zero exit, nothing written."""

import csv
import json
import math
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, TINY, run_cli, run_cli_process, run_torchrun
from dicom_factory import write_series
from duiit.bundle import read_header
from duiit.normalisation import MR_CONTRAST_JITTER
from duiit.phantom import head_phantom


def oblique_mr(path):
    image, _ = head_phantom((10, 40, 36), "MR", lesion=True, seed=5, spacing=(0.7, 0.9, 2.5))
    c, s = math.cos(0.3), math.sin(0.3)
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    image.SetOrigin((10.5, -20.25, 33.0))
    sitk.WriteImage(image, str(path))
    return image


def test_translate_keeps_geometry_and_writes_hu_and_error_map(trained_bundle, tmp_path):
    source = oblique_mr(tmp_path / "mr.nrrd")
    result = run_cli_process("translate", trained_bundle, tmp_path / "mr.nrrd", "-o", tmp_path / "ct.nrrd",
                     "--error-map", tmp_path / "error.mha", "--json")
    assert result.returncode == 0, result.stderr
    assert "using the CPU" in result.stderr  # the device is said plainly
    prediction = json.loads(result.stdout)
    assert prediction["volume"]["label"] in ("lesion", "none")
    assert abs(sum(prediction["volume"]["probabilities"]) - 1) < 1e-5
    for name in ("ct.nrrd", "error.mha"):
        out = sitk.ReadImage(str(tmp_path / name))
        assert out.GetSize() == source.GetSize()
        # NRRD stores spacing x direction, so a file round trip may move the last bit
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(out, get)(), getattr(source, get)(), rtol=0, atol=1e-9), get
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nrrd")))
    assert -1024 <= ct.min() and ct.max() <= 3071 and ct.std() > 1  # HU, and not constant
    error = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "error.mha")))
    assert 0 <= error.min() and error.max() <= 2


def test_translated_image_has_the_input_geometry_exactly(trained_bundle, tmp_path):
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    source = oblique_mr(tmp_path / "mr.nrrd")
    result = translate_volume(load_bundle(trained_bundle), source, device="cpu", with_error_map=True)
    for image in (result.ct, result.error_map):
        assert image.GetSize() == source.GetSize() and image.GetSpacing() == source.GetSpacing()
        assert image.GetOrigin() == source.GetOrigin() and image.GetDirection() == source.GetDirection()


def test_translate_dicom_series_in_and_out(trained_bundle, tmp_path):
    image, _ = head_phantom((6, 32, 32), "MR", seed=2)
    write_series(tmp_path / "mr", sitk.GetArrayFromImage(image) , modality="MR", spacing=(0.8, 0.8, 3.0))
    result = run_cli("translate", trained_bundle, tmp_path / "mr", "-o", tmp_path / "ct_series")
    assert result.returncode == 0, result.stderr
    back = sitk.ReadImage(sorted(str(p) for p in (tmp_path / "ct_series").iterdir()))
    assert back.GetSize() == (32, 32, 6) and np.allclose(back.GetSpacing(), (0.8, 0.8, 3.0))
    import pydicom
    first = pydicom.dcmread(sorted((tmp_path / "ct_series").iterdir())[0])
    assert first.Modality == "CT" and first.PatientID == "P1"


def test_predict_and_export(trained_bundle, mr_cohort, tmp_path):
    result = run_cli("predict", trained_bundle, mr_cohort.parent / "ct_01.nii.gz", "--json")
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    assert prediction["task"] == "classification" and prediction["slices"]
    result = run_cli("export", trained_bundle, "--manifest", mr_cohort, "-o", tmp_path / "export")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "export" / "labels.csv")))
    assert len(rows) == 6 and {r["modality"] for r in rows} == {"CT"}
    for row in rows:
        exported = sitk.ReadImage(str(tmp_path / "export" / row["path"]))
        original = sitk.ReadImage(row["source_path"])
        assert exported.GetSize() == original.GetSize() and exported.GetSpacing() == original.GetSpacing()


def test_index_lists_series_as_a_manifest(tmp_path):
    values = np.zeros((3, 8, 8))
    write_series(tmp_path / "dicom" / "a", values, modality="CT", patient_id="A")
    write_series(tmp_path / "dicom" / "b", values, modality="MR", patient_id="B")
    (tmp_path / "dicom" / "notes.txt").write_text("not dicom")
    result = run_cli("index", tmp_path / "dicom", "-o", tmp_path / "manifest.csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert sorted((r["patient_id"], r["modality"], r["label"]) for r in rows) == [("A", "CT", ""), ("B", "MR", "")]
    assert all(r["series_uid"] and r["path"].endswith(("a", "b")) for r in rows)


def test_train_progress_json_cancel_and_resume(mr_cohort, tmp_path):
    out = tmp_path / "model.duiit"
    command = [sys.executable, "-m", "duiit", "train", "--manifest", str(mr_cohort), "--source", "MR",
               "--task", "classification", "-o", str(out), "--iterations", "400", "--checkpoint-every", "1000",
               "--progress-json", *TINY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["step"] >= 2:
            process.send_signal(signal.SIGINT)
            break
    rest, _ = process.communicate(timeout=120)
    events += [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 130
    kinds = [e["event"] for e in events]
    assert kinds[0] == "loading" and "start" in kinds and kinds[-1] == "cancelled"
    progress = [e for e in events if e["event"] == "progress"][0]
    assert {"phase", "iteration", "total", "losses", "eta_s"} <= set(progress)
    assert not out.exists() and (tmp_path / "model.duiit.ckpt").exists()
    stopped_at = [e for e in events if e["event"] == "checkpoint"][-1]["iteration"]

    # resume with fewer remaining steps: same schedule needs the same options, so iterations stay 400;
    # instead check the resumed run starts where the checkpoint stopped, then cancel again
    process = subprocess.Popen(command + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "progress":
            assert event["step"] > stopped_at
            process.send_signal(signal.SIGTERM)
            break
    process.communicate(timeout=120)
    assert process.returncode == 130 and not out.exists()


def test_train_all_methods_with_report(mr_cohort, tmp_path):
    for method in ("cyclegan", "naive", "target-only"):
        out = tmp_path / f"{method}.duiit"
        result = run_cli("train", "--manifest", mr_cohort, "--source", "MR", "--task", "classification",
                         "--method", method, "-o", out, "--iterations", "2", "--report", tmp_path / method, *TINY,
                         *(["--no-mr-standard"] if method == "cyclegan" else []),
                         *(["--mr-contrast-jitter", "0.1"] if method == "naive" else []))
        assert result.returncode == 0, result.stderr
        header = read_header(out)
        assert header["method"] == method
        assert header["training"]["mr_contrast_jitter"] == (0.1 if method == "naive" else MR_CONTRAST_JITTER)
        # the MR histogram standard is kept unless asked not to (trained_bundle: test_bundle)
        assert ("standard" in header["normalisation"]["source"]) == (method != "cyclegan")
        assert (tmp_path / method / "report.html").exists() and (tmp_path / method / "losses.png").exists()
    result = run_cli("translate", tmp_path / "naive.duiit", mr_cohort.parent / "mr_00.nii.gz", "-o",
                     tmp_path / "x.nii.gz")
    assert result.returncode == 2 and "no translator" in result.stderr


def test_train_with_a_pretrained_sign_aware_augmented_guide_reports_the_guide_phase(mr_cohort, tmp_path):
    out = tmp_path / "guided.duiit"
    result = run_cli("train", "--manifest", mr_cohort, "--source", "MR", "--task", "classification", "-o", out,
                     "--iterations", "2", "--guide-predictor", "target", "--guide-pretrain", "3",
                     "--guide-inverted-lesions", "--predictor-augment", "--progress-json", *TINY)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    progress = [(e["phase"], e["step"], e["total_steps"]) for e in events if e["event"] == "progress"]
    phases = [phase for phase, _, _ in progress]  # events are thinned out; the phases come in order
    assert phases[0] == "guide" and phases == sorted(phases, key=("guide", "joint").index)
    assert progress[-1] == ("joint", 5, 5) and all(step <= 3 for phase, step, _ in progress if phase == "guide")
    training = read_header(out)["training"]
    assert training["guide_pretrain"] == 3 and training["predictor_augment"] is True
    assert training["guide_inverted_lesions"] is True


def test_two_process_distributed_training_with_gloo(mr_cohort, tmp_path):
    out = tmp_path / "ddp.duiit"
    result = run_torchrun("-m", "duiit", "train", "--manifest", mr_cohort, "--source", "MR", "--task",
                          "classification", "-o", out, "--iterations", "3", "--device", "cpu", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_header(out)["training"]["world_size"] == 2


def test_default_threads_leave_the_cores_other_work_keeps_busy(monkeypatch):
    import torch

    from duiit import device
    monkeypatch.setattr(device.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    for busy, expected in ((0.2, 4), (1.4, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(device, "busy_cores", lambda busy=busy: busy)
        assert device.default_cpu_threads() == expected, busy


def test_busy_cores_are_measured_now_where_the_kernel_tells(monkeypatch, tmp_path):
    from duiit import device
    assert 0.0 <= device.busy_cores(0.05) <= (device.os.cpu_count() or 1) + 1e-6  # this machine, for real
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 1 2 3 4\n")
    assert device._cpu_times(stat) == (158, 978)  # busy: all but idle and iowait
    assert device._cpu_times(tmp_path / "missing") is None
    readings = iter([(100, 1000), (250, 1200)])  # 150 of 200 ticks busy on 4 cores: 3 cores
    monkeypatch.setattr(device.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(device, "_cpu_times", lambda: next(readings))
    assert device.busy_cores(0.0) == pytest.approx(3.0)
    # without /proc/stat: the 1-minute load average
    monkeypatch.setattr(device, "_cpu_times", lambda: None)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (1.5, 1.0, 0.5), raising=False)
    assert device.busy_cores(0.0) == 1.5
