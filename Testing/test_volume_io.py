"""Volume reading/writing keeps geometry exactly; bad volumes get one clear error naming the file."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from duiit.errors import DuiitError
from duiit.slices import from_axial, to_axial
from duiit.volume_io import read_volume, write_volume


def oblique_image(shape=(7, 9, 11)):
    """Anisotropic spacing and a non-identity, non-axis-aligned direction."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.uniform(-1000, 2000, shape).astype(np.float32))
    image.SetSpacing((0.6, 0.9, 3.0))
    image.SetOrigin((-12.5, 40.0, 7.25))
    c, s = math.cos(0.4), math.sin(0.4)
    image.SetDirection((c, 0, s, 0, 1, 0, -s, 0, c))
    return image


def same_geometry(a, b, tolerance=1e-6):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nrrd", "v.mha", "dicom_series"])
def test_round_trip_keeps_geometry_and_values(tmp_path, name):
    image = oblique_image()
    write_volume(image, tmp_path / name)
    back = read_volume(tmp_path / name)
    assert same_geometry(image, back)
    expected = sitk.GetArrayFromImage(image)
    if name == "dicom_series":
        expected = np.rint(expected)  # DICOM stores integer HU
    assert np.abs(sitk.GetArrayFromImage(back) - expected).max() < 1e-3


def test_axial_reorientation_is_exactly_invertible():
    image = oblique_image()
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))  # sagittal-like acquisition: k is not axial
    axial = to_axial(image)
    assert axial.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    back = from_axial(axial, image)
    assert back.GetDirection() == image.GetDirection() and back.GetOrigin() == image.GetOrigin()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def write_raw(path, array, spacing=None):
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4 and array.shape[-1] == 3)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("case,expected", [
    ("missing", "no such file"),
    ("text", "not a readable image"),
    ("csv", "not a volume file"),
    ("2d", "2D"),
    ("single_slice", "single slice"),
    ("4d", "4D"),
    ("rgb", "values per voxel"),
    ("nan", "NaN"),
    ("empty_dicom_dir", "no DICOM image series"),
])
def test_bad_volumes_are_refused_with_the_file_named(tmp_path, case, expected):
    path = tmp_path / f"{case}.nii.gz"
    if case == "text":
        path.write_text("this is not an image")
    elif case == "csv":
        path = tmp_path / "table.csv"
        path.write_text("a,b\n1,2\n")
    elif case == "2d":
        write_raw(path, np.zeros((8, 8), np.float32))
    elif case == "single_slice":
        write_raw(path, np.zeros((1, 8, 8), np.float32))
    elif case == "4d":
        write_raw(path, np.zeros((2, 3, 8, 8), np.float32))
    elif case == "rgb":
        write_raw(tmp_path / "rgb.mha", np.zeros((4, 8, 8, 3), np.uint8))
        path = tmp_path / "rgb.mha"
    elif case == "nan":
        array = np.zeros((4, 8, 8), np.float32)
        array[1, 2, 3] = np.nan
        path = write_raw(tmp_path / "nan.nrrd", array)  # ITK's NIfTI reader turns NaN into 0
    elif case == "empty_dicom_dir":
        path = tmp_path / "dicom"
        path.mkdir()
        (path / "readme.txt").write_text("no images here")
    with pytest.raises(DuiitError) as error:
        read_volume(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_absurd_header_is_refused_before_allocation(tmp_path):
    header = tmp_path / "huge.mhd"
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                      "ElementType = MET_FLOAT\nElementDataFile = huge.raw\n")
    (tmp_path / "huge.raw").write_bytes(b"\0" * 16)
    with pytest.raises(DuiitError, match="over the limit"):
        read_volume(header)


def test_mixed_dicom_series_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    write_volume(oblique_image(), folder)
    other = tmp_path / "other"
    write_volume(oblique_image(), other)
    for f in other.iterdir():
        f.rename(folder / ("b_" + f.name))
    with pytest.raises(DuiitError, match="mixed series, 2 DICOM series"):
        read_volume(folder)


def test_unwritable_output_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DuiitError, match="cannot"):
        write_volume(oblique_image(), blocker / "out.nii.gz")
    assert blocker.read_text() == "x"
