"""The lesion-erasure check (Testing/benchmarks/lesion_erasure.py): lesions are edited only where their mask
is, and the twin AUC tells a predictor that sees lesions from one that only sees which slice it is."""

import numpy as np
import pytest
import torch

from Testing.benchmarks.lesion_erasure import edit_lesions, pair_win, visibility


def brain_with_a_lesion():
    """Three 24x24 slices of 30 HU brain; a 80 HU disc in the middle slice."""
    hu = np.full((3, 24, 24), 30.0, np.float32)
    yy, xx = np.mgrid[:24, :24]
    lesion = np.zeros(hu.shape, bool)
    lesion[1] = (yy - 12) ** 2 + (xx - 12) ** 2 <= 9
    hu[lesion] = 80.0
    return hu, lesion


@pytest.mark.parametrize("variant, expected", [("kept", 80.0), ("erased", 30.0), ("inverted", -20.0)])
def test_lesions_are_edited_about_their_ring(variant, expected):
    hu, lesion = brain_with_a_lesion()
    before = hu.copy()
    edited = edit_lesions(hu, lesion, variant)
    assert np.allclose(edited[lesion], expected)
    assert np.array_equal(edited[~lesion], hu[~lesion])  # nothing outside the lesion moves
    assert np.array_equal(hu, before)  # the input is not written to


class MeanBrightness(torch.nn.Module):
    """Lesion log-odds = the slice's mean: sees a bright lesion."""

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, -mean], dim=1)


class SliceNumber(torch.nn.Module):
    """Lesion log-odds from a corner pixel that encodes the slice's level: sees only where the slice is."""

    def forward(self, x):
        corner = x[:, 0, 0, 0]
        return torch.stack([corner, -corner], dim=1)


def slice_sets():
    """Four slices, two with a lesion (label 0), the level written into the corner pixel."""
    kept = torch.zeros(4, 1, 8, 8)
    kept[:, 0, 0, 0] = torch.tensor([3.0, 2.0, 1.0, 0.0])  # lesion slices sit at the higher levels
    kept[:2, 0, 3:5, 3:5] = 1.0
    erased = kept.clone()
    erased[:2, 0, 3:5, 3:5] = 0.0
    inverted = kept.clone()
    inverted[:2, 0, 3:5, 3:5] = -1.0
    labels = np.array([0, 0, 1, 1])
    return {"kept": (kept, labels), "erased": (erased, labels), "inverted": (inverted, labels)}


def test_a_predictor_that_sees_lesions_loses_them_when_erased():
    row = visibility(MeanBrightness(), slice_sets(), lesion=0)
    assert row["kept"] == 1.0 and row["twin_auc"] == 1.0 and row["twin_pair_win"] == 1.0
    assert row["lesion_log_odds"]["erased"] < row["lesion_log_odds"]["kept"]


def test_a_predictor_that_sees_the_level_keeps_its_auc_without_lesions():
    row = visibility(SliceNumber(), slice_sets(), lesion=0)
    assert row["kept"] == row["erased"] == row["inverted"] == 1.0
    assert row["twin_auc"] == 0.5  # each lesion slice scores exactly as its erased twin
    assert row["twin_pair_win"] == 0.5  # ties count one half


def test_the_pair_win_sees_a_lesion_pull_that_the_level_spread_hides():
    """Each lesion lifts its slice's score a little, less than the levels differ: pooled, the kept slices
    beat the erased ones in only 10 of 16 pairs, while every slice beats its own erased twin."""
    kept, erased = np.array([3.1, 2.1, 1.1, 0.1]), np.array([3.0, 2.0, 1.0, 0.0])
    assert pair_win(kept, erased) == 1.0
    assert pair_win(erased, kept) == 0.0
    assert pair_win(np.array([]), np.array([])) is None
