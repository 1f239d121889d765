"""The real sample images: fetched from the package registries, converted to NIfTI with true geometry.

The fetch needs apt-get (Debian packages) and pip (PyPI); where either is impossible the tests that need
the images skip and say why. The images are cached ($DUIIT_CACHE or ~/.cache/duiit), so only the first
run downloads (about 35 MB of Debian packages, a 34 MB source archive and two wheels of 16 and 8 MB,
~15 s).
"""

import io
import plistlib
import subprocess
import tarfile

import numpy as np
import pytest
import SimpleITK as sitk

from duiit import sample_data
from duiit.errors import DuiitError


@pytest.fixture(scope="module")
def samples():
    try:
        return sample_data.fetch_all()
    except DuiitError as exc:
        pytest.skip(f"the real sample images cannot be fetched here: {exc}")


def _read(path):
    return sitk.ReadImage(str(path))


def _lps_array(image):
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def test_fetch_all_names_every_sample(samples):
    assert set(samples) == set(sample_data.SAMPLES)
    for name, path in samples.items():
        assert path.is_file() and path.name.endswith(".nii.gz"), name
        assert sample_data.cache_root() in path.parents
    recorded = sample_data.provenance()
    assert recorded["cranium_ct"]["package"].startswith("Debian invesalius-examples")
    assert recorded["colin27_t1"]["licence"] == "BSD-3-Clause"
    assert "pyradiomics==3.0.1" in recorded["brain1_t1"]["package"]
    assert recorded["mni152_t1"]["package"].startswith("PyPI nimare") and "MIT" in recorded["mni152_t1"]["licence"]
    assert recorded["mean_head_t1"]["package"].startswith("PyPI pydeface")


def test_cranium_ct_geometry_and_hu(samples):
    ct = _read(samples["cranium_ct"])
    assert ct.GetSize() == (256, 256, 108)
    assert ct.GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(ct.GetSpacing(), (0.9570312, 0.9570312, 1.5), atol=1e-5)
    np.testing.assert_allclose(ct.GetDirection(), sample_data.CRANIUM_DIRECTION)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    assert hu.min() == -1024 and 2000 < hu.max() < 3100
    air = hu[hu < -500]
    assert -1030 < np.median(air) < -980                      # air and the outside of the field of view
    assert (hu > 700).mean() > 0.01                           # skull
    assert np.median(hu[(hu > 0) & (hu < 60)]) == pytest.approx(22, abs=8)   # brain / soft tissue
    assert ((hu > -100) & (hu < -50)).sum() > 10000           # fat of the scalp


def test_cranium_ct_orientation(samples):
    """LPS order: k rises toward the vertex, j toward the back (the head rest lies behind the head)."""
    ct = sitk.DICOMOrient(_read(samples["cranium_ct"]), "LPS")
    labels = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(ct > -500)))
    head, rest = labels == 1, labels >= 2
    area = head.reshape(head.shape[0], -1).sum(1)
    assert area[-3:].max() < 0.6 * area.max()                 # the head narrows at the top: vertex at high k
    assert area[:10].min() > 0.7 * area.max()                 # skull base at low k
    assert rest.sum() > 50000                                 # the scanner's head rest (two parts, cut by the FOV)
    assert np.nonzero(rest)[1].mean() > np.nonzero(head)[1].mean() + 40   # ... posterior (higher j in LPS)
    assert np.nonzero(rest)[1].max() > np.nonzero(head)[1].max()


def test_colin27(samples):
    t1, brain = _read(samples["colin27_t1"]), _read(samples["colin27_brain"])
    assert t1.GetSize() == brain.GetSize() == (181, 217, 181)
    np.testing.assert_allclose(t1.GetSpacing(), (1, 1, 1))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(t1.GetDirection()) == "RAS"
    a, b = _lps_array(t1).astype(np.float32), _lps_array(brain).astype(np.float32)
    assert np.median(a[-5:]) == 0 and a.max() > 200           # air above the vertex; a full head
    inside = b > 0
    assert 0.08 < inside.mean() < 0.25                        # brain ~1.1-1.8 l of 7.1 l
    assert (a[inside] > 0).mean() > 0.99                      # the stripped brain lies in the head
    # Full head: scalp and skull around the brain, so the head is bigger than the brain in every direction.
    head_rows = np.nonzero(a.max(axis=(0, 2)) > 40)[0]
    brain_rows = np.nonzero(b.max(axis=(0, 2)) > 0)[0]
    assert head_rows.min() < brain_rows.min() and head_rows.max() > brain_rows.max()


@pytest.mark.parametrize("case, slices", [("brain1", 25), ("brain2", 23)])
def test_pyradiomics_brains(samples, case, slices):
    t1, tumour = _read(samples[f"{case}_t1"]), _read(samples[f"{case}_tumour"])
    assert t1.GetSize() == tumour.GetSize() == (256, 256, slices)
    np.testing.assert_allclose(t1.GetSpacing(), (0.78125, 0.78125, 6.5), atol=1e-6)
    np.testing.assert_allclose(t1.GetDirection(), tumour.GetDirection())
    np.testing.assert_allclose(t1.GetOrigin(), tumour.GetOrigin())
    a, m = sitk.GetArrayFromImage(t1).astype(np.float32), sitk.GetArrayFromImage(tumour)
    assert set(np.unique(m)) == {0, 1} and 100 < m.sum() < 0.01 * m.size
    # Post-contrast T1: the tumour enhances, brighter than the head's median tissue.
    assert np.median(a[m > 0]) > np.median(a[a > np.percentile(a, 50)])


def test_mni152_template(samples):
    t1, brain = _read(samples["mni152_t1"]), _read(samples["mni152_brain"])
    assert t1.GetSize() == brain.GetSize() == (182, 218, 182)
    np.testing.assert_allclose(t1.GetSpacing(), (1, 1, 1))
    a, b = _lps_array(t1).astype(np.float32), _lps_array(brain) > 0
    assert 0.15 < b.mean() < 0.3                               # brain with its CSF, ~1.8 l in a 7.2 l box
    assert np.median(a[b]) > 3 * np.median(a[~b])              # T1: brain bright, mostly air outside it
    head = a > 0.2 * np.percentile(a, 99)
    assert (head & ~b).sum() > 0.5 * b.sum()                   # a full head: scalp and skull around the brain


def test_pydeface_mean_head(samples):
    t1 = _read(samples["mean_head_t1"])
    assert t1.GetSize() == (176, 256, 256)
    a = _lps_array(t1).astype(np.float32)
    head = a > 0.2 * np.percentile(a, 99)
    assert 0.15 < head.mean() < 0.6 and np.median(a[~head]) < 0.05 * np.percentile(a, 99)
    rows = np.nonzero(head.any(axis=(0, 2)))[0]
    assert 150 < (rows.max() - rows.min()) * t1.GetSpacing()[1] < 260   # a head's front-to-back length in mm


def test_fetch_is_idempotent(samples, monkeypatch):
    before = {name: path.stat().st_mtime_ns for name, path in samples.items()}

    def no_download(*args, **kwargs):
        raise AssertionError("a cached sample was fetched again")

    monkeypatch.setattr(subprocess, "run", no_download)
    again = sample_data.fetch_all()
    assert again == samples
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == before


def test_missing_apt_get_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sample_data.shutil, "which", lambda name: None)
    with pytest.raises(DuiitError) as caught:
        sample_data.fetch("cranium_ct", cache_dir=tmp_path, log=lambda message: None)
    message = str(caught.value)
    assert "invesalius-examples" in message and "apt-get is not available" in message
    assert "\n" not in message
    assert not list((tmp_path / "sample_data").glob("*.nii.gz"))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    image = sitk.Image(4, 4, 4, sitk.sitkInt16)
    monkeypatch.setattr(sample_data, "_invesalius", lambda tmp: ({"cranium_ct": image}, {"package": "test"}))

    def half_write(img, path, useCompression=True):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(sample_data.sitk, "WriteImage", half_write)
    with pytest.raises(DuiitError, match="cannot write .*No space left"):
        sample_data.fetch("cranium_ct", cache_dir=tmp_path, log=lambda message: None)
    assert [p.name for p in (tmp_path / "sample_data").iterdir()] == []


def _inv3(tmp_path, array, shape=None):
    plist = {"matrix": {"filename": "matrix.dat", "shape": list(shape or array.shape), "dtype": "int16"},
             "spacing": [0.5, 0.5, 2.0], "orientation": 1, "modality": "CT", "name": "test"}
    path = tmp_path / "test.inv3"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("tmpabc/main.plist", plistlib.dumps(plist)), ("tmpabc/matrix.dat", array.tobytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_read_inv3_geometry_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    head = np.full((6, 8, 10), -1024, dtype=np.int16)
    head[:, 2:6, 2:8] = rng.integers(0, 80, size=(6, 4, 6))
    head[:, 2, 2:8] = 1200                                     # "bone"
    image, info = sample_data.read_inv3(_inv3(tmp_path, head))
    assert image.GetSize() == (10, 8, 6) and image.GetSpacing() == (0.5, 0.5, 2.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), head)
    assert info["matrix_shape_zyx"] == [6, 8, 10]
    with pytest.raises(DuiitError, match="not a plausible head CT"):
        sample_data.read_inv3(_inv3(tmp_path, np.zeros((6, 8, 10), dtype=np.int16)))
    with pytest.raises(DuiitError, match="main.plist implies"):
        sample_data.read_inv3(_inv3(tmp_path, head, shape=(7, 8, 10)))


def test_cli_prints_the_paths(samples, capsys):
    assert sample_data.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert dict(line.split("\t") for line in lines) == {name: str(path) for name, path in samples.items()}
