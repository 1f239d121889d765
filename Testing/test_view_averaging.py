"""Test-time view averaging (duiit/view_averaging.py): each view is mapped back to the slice before the mean,
and translation averages the translator's views on the input's exact grid."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_cli
from test_cli import oblique_mr

from duiit.errors import DuiitError
from duiit.view_averaging import VIEW_COUNTS, ViewAveraging


@pytest.mark.parametrize("views", VIEW_COUNTS)
def test_a_pixel_by_pixel_generator_is_unchanged(views):
    # every view mapped back gives the plain output; a wrong inverse shift or mirror would move pixels
    x = torch.randn(3, 1, 16, 20)
    generator = lambda t: torch.tanh(2 * t)  # noqa: E731
    assert torch.allclose(ViewAveraging(generator, views, downsamplings=2)(x), generator(x), atol=1e-6)


def test_mirrored_views_are_averaged():
    # adding the column number: mirrored, the generator adds it reversed, so the mean adds the middle column
    x = torch.randn(2, 1, 8, 10)
    generator = lambda t: t + torch.arange(10.0)  # noqa: E731
    assert torch.allclose(ViewAveraging(generator, 2, downsamplings=2)(x), x + 4.5, atol=1e-6)


def test_shifted_views_move_by_half_the_generator_stride():
    # adding the row number: the views shifted by half the stride (2 rows for a stride of 4) see each row
    # 2 rows lower, so the mean of 4 views (plain, mirrored, both shifted) adds (i + (i + 2) mod 8) / 2 to row i
    x = torch.randn(2, 1, 8, 10)
    rows = torch.arange(8.0)[:, None]
    generator = lambda t: t + rows  # noqa: E731
    expected = x + (rows + (rows + 2) % 8) / 2
    assert torch.allclose(ViewAveraging(generator, 4, downsamplings=2)(x), expected, atol=1e-5)
    assert ViewAveraging(generator, 4, downsamplings=3).half_stride == 4


def test_translation_averaged_over_views_keeps_the_grid(trained_bundle, tmp_path):
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    bundle, source = load_bundle(trained_bundle), oblique_mr(tmp_path / "mr.nrrd")
    plain = translate_volume(bundle, source, device="cpu")
    averaged = translate_volume(bundle, source, device="cpu", views=8, with_error_map=True)
    for image in (averaged.ct, averaged.error_map):
        assert image.GetSize() == source.GetSize() and image.GetSpacing() == source.GetSpacing()
        assert image.GetOrigin() == source.GetOrigin() and image.GetDirection() == source.GetDirection()
    a, b = sitk.GetArrayFromImage(plain.ct), sitk.GetArrayFromImage(averaged.ct)
    assert -1024 <= b.min() and b.max() <= 3071 and b.std() > 1
    assert 0 < np.abs(a - b).mean() < np.abs(a - a.mean()).mean()  # a different estimate of the same image
    assert averaged.prediction["slices"]
    with pytest.raises(DuiitError, match="views must be one of 1, 2, 4, 8, not 3"):
        translate_volume(bundle, source, device="cpu", views=3)


def test_command_line_views(trained_bundle, tmp_path):
    oblique_mr(tmp_path / "mr.nrrd")
    result = run_cli("translate", trained_bundle, tmp_path / "mr.nrrd", "-o", tmp_path / "ct.nrrd", "--views", "2")
    assert result.returncode == 0, result.stderr
    assert sitk.ReadImage(str(tmp_path / "ct.nrrd")).GetSize() == (36, 40, 10)
    refused = run_cli("translate", trained_bundle, tmp_path / "mr.nrrd", "-o", tmp_path / "no.nrrd", "--views", "3")
    assert refused.returncode == 2 and "--views: invalid choice: 3" in refused.stderr
    assert not (tmp_path / "no.nrrd").exists()
