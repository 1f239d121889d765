"""Intensity normalisation: CT HU inversion, MR percentiles, PET SUV(bw) from the DICOM tags of a series."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dicom_factory import pet_tags, write_series
from duiit.dicom_series import find_series
from duiit.normalisation import (apply_normalisation, apply_standardisation, bend_standard, fit_normalisation,
                                  hu_to_unit, learn_standard, normalise, standardise_record, unit_to_hu)
from duiit.suv import suv_factor
from duiit.volume_io import read_volume


@pytest.mark.parametrize("record", [None, {"method": "ct_hu", "low": -1024.0, "high": 3071.0}],
                         ids=["piecewise", "linear (older bundles)"])
def test_ct_mapping_is_invertible_to_float_error(record):
    hu = np.linspace(-1024, 3071, 100001, dtype=np.float32)
    unit = hu_to_unit(hu, record)
    assert np.all(np.diff(unit) > 0)  # strictly monotone, so invertible
    back = unit_to_hu(unit, record)
    assert np.abs(back - hu).max() < 1e-3
    assert hu_to_unit(np.array([-3000.0, 5000.0]), record).tolist() == pytest.approx([-1.0, 1.0])  # clipped
    tensor = torch.from_numpy(hu)
    assert torch.allclose(hu_to_unit(tensor, record), torch.from_numpy(unit), atol=1e-6)  # same map in torch


def test_ct_mapping_gives_soft_tissue_most_of_the_range():
    record = fit_normalisation(np.zeros(1, np.float32), "CT")
    assert record["method"] == "ct_hu_piecewise"
    soft = float(np.ptp(apply_normalisation(np.array([-150.0, 150.0]), record))) / 2.0
    linear = float(np.ptp(hu_to_unit(np.array([-150.0, 150.0]), {"method": "ct_hu"}))) / 2.0
    assert soft >= 0.4 and soft > 5 * linear
    lesion = np.diff(apply_normalisation(np.array([30.0, 80.0]), record))[0]  # a hyperdense lesion in the brain
    assert lesion > 0.1


def _head(brain: float, fat: float, rng) -> np.ndarray:
    """A T1-like head: dark background, a thin bright fat ring, a big brain of the given brightness."""
    z, y, x = np.mgrid[:12, :48, :48]
    radius = np.hypot(y - 24, x - 24)
    mr = np.where(radius < 16, brain, np.where(radius < 18, fat, 5.0)) + rng.normal(0, 2, radius.shape)
    return np.abs(mr).astype(np.float32)


def test_mr_foreground_median_puts_the_brain_of_different_t1s_at_the_same_level():
    rng = np.random.default_rng(1)
    bright_brain, dark_brain = _head(500.0, 700.0, rng), _head(300.0, 900.0, rng)  # Colin27-like, brain1-like
    units = []
    for mr in (bright_brain, dark_brain):
        unit, record = normalise(mr, "MR")
        assert record["method"] == "foreground_median"
        units.append(unit)
        assert abs(float(np.median(unit[:, 20:28, 20:28]))) < 0.05   # the brain at 0
        assert float(np.median(unit[:, :4, :4])) < -0.95             # the background at -1
    # with the 99.5th percentile as the top, the same two brains were 0.4 apart
    old = [apply_normalisation(mr, {"method": "percentile", "low": float(np.percentile(mr, 0.5)),
                                    "high": float(np.percentile(mr, 99.5))}) for mr in (bright_brain, dark_brain)]
    assert float(np.median(old[0][:, 20:28, 20:28]) - np.median(old[1][:, 20:28, 20:28])) > 0.3


def _two_tissue_head(grey: float, white: float, fat: float, rng) -> np.ndarray:
    """A T1-like head whose brain is two tissues (a grey ring around a white core) and a thin fat ring."""
    z, y, x = np.mgrid[:12, :48, :48]
    radius = np.hypot(y - 24, x - 24)
    tissue = np.where(radius < 9, white, np.where(radius < 16, grey, np.where(radius < 18, fat, 5.0)))
    return np.abs(tissue + rng.normal(0, 2, radius.shape)).astype(np.float32)


def _tissue_levels(unit: np.ndarray) -> list:
    """Median network unit of the white core, the grey ring and the fat ring."""
    y, x = np.mgrid[:48, :48]
    radius = np.hypot(y - 24, x - 24)
    return [float(np.median(unit[:, ring])) for ring in (radius < 8, (radius > 10) & (radius < 15),
                                                          (radius > 16.3) & (radius < 17.7))]


def test_mr_standardisation_maps_different_t1_contrasts_onto_one_standard():
    rng = np.random.default_rng(2)
    # the same anatomy from two scanners: little grey/white contrast and dim fat; strong contrast and fat
    # at over twice the brain (above the two-point map's top, where it would be clipped)
    volumes = [_two_tissue_head(400.0, 440.0, 520.0, rng), _two_tissue_head(250.0, 400.0, 560.0, rng)]
    records = [fit_normalisation(v, "MR") for v in volumes]
    standard = learn_standard(records)
    assert len(standard) == len(records[0]["landmarks"]) and np.all(np.diff(standard) > 0)
    before = [_tissue_levels(apply_normalisation(v, r)) for v, r in zip(volumes, records)]
    after = [_tissue_levels(apply_normalisation(v, standardise_record(r, standard))) for v, r in zip(volumes, records)]
    gaps_before = np.abs(np.subtract(*before))
    gaps_after = np.abs(np.subtract(*after))
    assert gaps_before.max() > 0.3, before       # the two-point map leaves the contrasts apart
    assert gaps_after.max() < 0.1, after         # the standard brings each tissue to one level
    assert before[1][2] == 1.0 and after[1][2] < 0.95, (before, after)  # the bright fat is mapped, not clipped
    unit = apply_normalisation(volumes[1], standardise_record(records[1], standard))
    assert unit.dtype == np.float32 and -1.0 <= unit.min() and unit.max() <= 1.0


def test_mr_standardisation_is_monotone_the_same_in_torch_and_absent_without_a_standard():
    rng = np.random.default_rng(3)
    volume = _two_tissue_head(300.0, 420.0, 900.0, rng)
    record = fit_normalisation(volume, "MR")
    assert standardise_record(record, None) is record
    assert "standardisation" not in standardise_record(fit_normalisation(volume, "PT"), [0.0] * 11)
    standardised = standardise_record(record, learn_standard([record, fit_normalisation(volume * 1.7 + 20, "MR")]))
    values = np.linspace(-3.0, 5.0, 2001, dtype=np.float32)
    numpy_map = apply_standardisation(values, standardised)
    assert np.all(np.diff(numpy_map) >= 0) and numpy_map[0] == -1.0 and numpy_map[-1] == 1.0
    assert np.allclose(apply_standardisation(torch.from_numpy(values), standardised).numpy(), numpy_map, atol=1e-6)


def test_a_bent_standard_keeps_its_ends_and_order_and_moves_the_contrast_between():
    standard = [-0.8, -0.45, -0.2, 0.0, 0.2, 0.45, 0.9, 1.4]
    assert np.allclose(bend_standard(standard, 1.0), standard)
    brighter, darker = bend_standard(standard, 0.85), bend_standard(standard, 1.15)
    for bent in (brighter, darker):
        assert all(b > a for a, b in zip(bent, bent[1:]))
    inside = [i for i, u in enumerate(standard) if -1.0 < u < 1.0]  # (above 1, fat, the bend reverses)
    assert all(brighter[i] > standard[i] > darker[i] for i in inside)
    assert bend_standard([-1.0, 1.0], 0.7) == [-1.0, 1.0]  # background and the two-point top stay put


def test_mr_scaling_is_robust_to_outliers():
    rng = np.random.default_rng(1)
    mr = _head(400.0, 800.0, rng)
    reference, _ = normalise(mr, "MR")
    mr[0, 0, :5] = 1e6  # a few hot voxels must not squash the range or become "the foreground"
    unit, record = normalise(mr, "MR")
    assert record["method"] == "foreground_median"
    assert -1 <= unit.min() and unit.max() <= 1
    assert np.abs(unit[1:] - reference[1:]).max() < 0.02


def test_mr_without_a_foreground_falls_back_to_percentiles_and_says_why():
    unit, record = normalise(np.full((4, 8, 8), 7.0, dtype=np.float32), "MR")
    assert record["method"] == "percentile" and "Otsu" in record["foreground_median_unavailable"]
    assert np.isfinite(unit).all()


def test_suv_against_a_hand_computed_value(tmp_path):
    """PET series with per-slice rescale slopes and SUV tags; compare with SUV computed by hand."""
    activity = np.full((4, 16, 16), 5000.0)  # Bq/ml
    activity[:, 4:8, 4:8] = 20000.0
    folder = write_series(tmp_path / "pet", activity, modality="PT", slopes=[0.75, 1.0, 2.0, 4.0],
                          extra=pet_tags(weight_kg=70.0, dose_bq=370e6, half_life_s=6586.2,
                                         injection="093000", series_time="103000"))
    tags = find_series(folder).tags
    factor, why_not = suv_factor(tags)
    assert why_not is None
    # by hand: 60 min after injection, dose decays to 370e6 * 2^(-3600/6586.2) = 253.31 MBq, SUV = 5000 * 70000 / 253.31e6
    decayed = 370e6 * 2 ** (-3600 / 6586.2)
    expected_background = 5000.0 * 70000.0 / decayed
    assert abs(expected_background - 1.3817) < 1e-4
    image = read_volume(folder)
    suv = sitk.GetArrayFromImage(image) * factor
    assert np.allclose(suv[:, 0, 0], expected_background, rtol=1e-4)  # every slice, whatever its slope
    assert np.allclose(suv[:, 5, 5], 4 * expected_background, rtol=1e-4)
    unit, record = normalise(sitk.GetArrayFromImage(image), "PT", tags)
    assert record["method"] == "suv" and abs(record["factor"] - factor) < 1e-12


def test_pet_without_suv_tags_falls_back_to_percentiles_and_says_why(tmp_path):
    folder = write_series(tmp_path / "pet", np.full((3, 8, 8), 100.0), modality="PT",
                          extra=pet_tags(units="CNTS"))
    _, record = normalise(sitk.GetArrayFromImage(read_volume(folder)), "PT", find_series(folder).tags)
    assert record["method"] == "percentile" and "CNTS" in record["suv_unavailable"]


def test_admin_decay_correction_uses_the_undecayed_dose():
    tags = {"Units": "BQML", "DecayCorrection": "ADMIN", "PatientWeight": "80",
            "Radiopharmaceutical": {"RadionuclideTotalDose": "400000000", "RadionuclideHalfLife": "6586.2"}}
    factor, _ = suv_factor(tags)
    assert abs(factor - 80000.0 / 400e6) < 1e-15
