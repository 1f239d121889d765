"""Bad input through the CLI: a one-line error naming the file or case, exit code 2, no traceback,
and nothing written at the output path."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TINY, run_cli
from dicom_factory import write_series
from duiit.phantom import head_phantom


SPLIT_HEADER = "path,modality,label,patient_id,split"


def manifest(folder, rows, header="path,modality,label,patient_id"):
    path = folder / "manifest.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def volume(folder, name, modality="CT", seed=0, shape=(8, 32, 32)):
    image, _ = head_phantom(shape, modality, seed=seed)
    sitk.WriteImage(image, str(folder / name))
    return name


def good_rows(folder):
    return [f"{volume(folder, f'ct{n}.nii.gz', 'CT', n)},CT,{'ab'[n % 2]},C{n}" for n in range(4)] + \
           [f"{volume(folder, f'mr{n}.nii.gz', 'MR', n)},MR,{'ab'[n % 2]},M{n}" for n in range(2)]


def train(manifest_path, out, *extra):
    return run_cli("train", "--manifest", manifest_path, "--source", "MR", "--task", "classification",
                   "-o", out, "--iterations", "1", *TINY, *extra)


def assert_clean_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("duiit: error: "), result.stderr
    for word in words:
        assert str(word) in lines[-1], (word, lines[-1])


def bad_manifest_case(tmp_path, case):
    rows = good_rows(tmp_path)
    if case == "non-image file":
        (tmp_path / "notes.nii.gz").write_text("not an image")
        rows.append("notes.nii.gz,CT,a,C9")
        return manifest(tmp_path, rows), ["notes.nii.gz", "not a readable image"]
    if case == "2D image":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.float32)), str(tmp_path / "flat.nii.gz"))
        rows.append("flat.nii.gz,CT,a,C9")
        return manifest(tmp_path, rows), ["flat.nii.gz", "2D"]
    if case == "4D image":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 32, 32), np.float32)), str(tmp_path / "t.nii.gz"))
        rows.append("t.nii.gz,CT,a,C9")
        return manifest(tmp_path, rows), ["t.nii.gz", "4D"]
    if case == "NaN voxels":
        array = np.zeros((4, 32, 32), np.float32)
        array[2, 3, 4] = np.nan
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.mha"))
        rows.append("nan.mha,CT,a,C9")
        return manifest(tmp_path, rows), ["nan.mha", "NaN"]
    if case == "case without a label":
        rows.append(f"{volume(tmp_path, 'ct9.nii.gz')},CT,,C9")
        return manifest(tmp_path, rows), ["C9", "no label"]
    if case == "dicom folder without images":
        (tmp_path / "empty_series").mkdir()
        (tmp_path / "empty_series" / "a.txt").write_text("x")
        rows.append("empty_series,CT,a,C9")
        return manifest(tmp_path, rows), ["empty_series", "no DICOM image series"]
    if case == "mixed dicom series":
        write_series(tmp_path / "mixed", np.zeros((2, 16, 16)), "CT")
        write_series(tmp_path / "mixed2", np.zeros((2, 16, 16)), "CT")
        for f in (tmp_path / "mixed2").iterdir():
            f.rename(tmp_path / "mixed" / ("x" + f.name))
        rows.append("mixed,CT,a,C9")
        return manifest(tmp_path, rows), ["mixed", "mixed series"]
    if case == "modality does not match the DICOM tag":
        write_series(tmp_path / "really_ct", np.zeros((3, 32, 32)), "CT")
        rows.append("really_ct,MR,a,M9")
        return manifest(tmp_path, rows), ["M9", "manifest says MR", "Modality tag is CT"]
    if case == "unlabelled MR case":
        rows = [f"{row},train" for row in rows] + [f"{volume(tmp_path, 'mr9.nii.gz', 'MR')},MR,,M9,unlabelled"]
        return manifest(tmp_path, rows, header=SPLIT_HEADER), ["M9", "'unlabelled' is for CT", "needs a label"]
    if case == "patient in two splits":
        rows = [f"{row},train" for row in rows] + [f"{volume(tmp_path, 'ct9.nii.gz')},CT,,C1,unlabelled"]
        return manifest(tmp_path, rows, header=SPLIT_HEADER), ["C1", "two splits", "ct9.nii.gz"]
    if case == "unlabelled patient with a labelled case":
        rows = [f"{row}," for row in rows] + [f"{volume(tmp_path, 'ct9.nii.gz')},CT,,C1,unlabelled"]
        return manifest(tmp_path, rows, header=SPLIT_HEADER), ["C1", "ct1.nii.gz", "none"]
    if case == "missing column":
        return manifest(tmp_path, ["a.nii.gz,CT,a"], header="path,modality,label"), ["manifest.csv", "patient_id"]
    if case == "missing file":
        rows.append("nowhere.nii.gz,CT,a,C9")
        return manifest(tmp_path, rows), ["nowhere.nii.gz", "no such file"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["non-image file", "2D image", "4D image", "NaN voxels", "case without a label",
                                  "dicom folder without images", "mixed dicom series",
                                  "modality does not match the DICOM tag", "unlabelled MR case",
                                  "patient in two splits", "unlabelled patient with a labelled case",
                                  "missing column", "missing file"])
def test_bad_training_input(tmp_path, case):
    path, words = bad_manifest_case(tmp_path, case)
    out = tmp_path / "model.duiit"
    assert_clean_error(train(path, out), *words)
    assert not out.exists() and not (tmp_path / "model.duiit.ckpt").exists()


def test_class_with_no_cases(tmp_path):
    path = manifest(tmp_path, good_rows(tmp_path))
    assert_clean_error(train(path, tmp_path / "m.duiit", "--classes", "a,b,c"), "class 'c' has no cases")
    one_class = manifest(tmp_path, [r.replace(",b,", ",a,") for r in good_rows(tmp_path)])
    assert_clean_error(train(one_class, tmp_path / "m.duiit"), "at least 2 classes")
    assert not (tmp_path / "m.duiit").exists()


@pytest.mark.parametrize("option, value", [("--task-floor", "-1"), ("--lambda-structure", "-1"),
                                           ("--translator-ema", "-0.5"), ("--translator-ema", "1"),
                                           ("--mr-contrast-jitter", "1"), ("--mr-contrast-jitter", "-0.1")])
def test_out_of_range_training_weights_are_refused(tmp_path, option, value):
    out = tmp_path / "m.duiit"
    assert_clean_error(train(manifest(tmp_path, good_rows(tmp_path)), out, option, value), option, "0 ", value)
    assert not out.exists()


def test_contrast_jitter_without_the_mr_standard_is_refused(tmp_path):
    out = tmp_path / "m.duiit"
    result = train(manifest(tmp_path, good_rows(tmp_path)), out, "--mr-contrast-jitter", "0.1", "--no-mr-standard")
    assert_clean_error(result, "--mr-contrast-jitter", "--no-mr-standard")
    assert not out.exists()


@pytest.mark.parametrize("options, problem", [(("--guide-pretrain", "-5"), "must be 0"),
                                              (("--guide-pretrain", "5"), "--guide-predictor target")])
def test_guide_pretraining_without_a_target_guide_is_refused(tmp_path, options, problem):
    out = tmp_path / "m.duiit"
    assert_clean_error(train(manifest(tmp_path, good_rows(tmp_path)), out, *options), "--guide-pretrain", problem)
    assert not out.exists()


def test_inverted_lesions_without_a_target_guide_or_without_masks_are_refused(tmp_path):
    out = tmp_path / "m.duiit"
    assert_clean_error(train(manifest(tmp_path, good_rows(tmp_path)), out, "--guide-inverted-lesions"),
                       "--guide-inverted-lesions", "--guide-predictor target")
    assert_clean_error(train(manifest(tmp_path, good_rows(tmp_path)), out, "--guide-inverted-lesions",
                             "--guide-predictor", "target"), "inverted lesions", "lesion masks")
    assert not out.exists()


def test_unwritable_outputs(tmp_path, trained_bundle):
    path = manifest(tmp_path, good_rows(tmp_path))
    (tmp_path / "blocker").write_text("a file, not a folder")
    assert_clean_error(train(path, tmp_path / "blocker" / "m.duiit"), "blocker")
    assert_clean_error(train(path, tmp_path), "is a folder")
    result = run_cli("translate", trained_bundle, tmp_path / "mr0.nii.gz", "-o", tmp_path / "blocker" / "ct.nii.gz")
    assert_clean_error(result, "blocker")
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


def test_bad_translate_inputs(tmp_path, trained_bundle):
    (tmp_path / "notes.txt").write_text("hello")
    assert_clean_error(run_cli("translate", trained_bundle, tmp_path / "notes.txt", "-o", tmp_path / "o.nii.gz"),
                       "notes.txt")
    volume(tmp_path, "mr.nii.gz", "MR")
    assert_clean_error(run_cli("translate", tmp_path / "notes.txt", tmp_path / "mr.nii.gz", "-o",
                               tmp_path / "o.nii.gz"), "notes.txt", "not a DUIIT model bundle")
    write_series(tmp_path / "ct_series", np.zeros((3, 16, 16)), "CT")
    assert_clean_error(run_cli("translate", trained_bundle, tmp_path / "ct_series", "-o", tmp_path / "o.nii.gz"),
                       "is a CT series", "translates MR")
    assert_clean_error(run_cli("translate", trained_bundle, tmp_path / "mr.nii.gz", "-o", tmp_path / "o.xyz"),
                       "unknown output format")
    assert_clean_error(run_cli("translate", trained_bundle, tmp_path / "mr.nii.gz", "-o", tmp_path / "o.nii.gz",
                               "--device", "cuda:3"), "cuda:3")
    assert not list(tmp_path.glob("o.*"))
