"""Files that declare absurd sizes (100000^3 voxels) are refused from their header, before any voxel
memory is allocated; the limit (DUIIT_MAX_VOXELS, default 1024^3) is configurable."""

import io
import os
import resource
import struct
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import ROOT
from dicom_factory import write_series
from duiit.errors import DuiitError
from duiit.volume_io import MAX_VOXELS, read_volume
from robustness_tally import tally  # noqa: F401  (a fixture)


def nrrd(path, size):
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: %d %d %d\nencoding: raw\nendian: little\n\n"
                     % size + b"\0" * 64)


def nifti1(path, size):
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkFloat32), str(path))
    data = bytearray(path.read_bytes())
    struct.pack_into("<hhh", data, 42, *size)
    path.write_bytes(bytes(data))


def nifti2(path, size):
    """A NIfTI-2 header (64-bit sizes, the only NIfTI that can say 100000)."""
    header = bytearray(544)
    struct.pack_into("<i8shh8q", header, 0, 540, b"n+2\0\r\n\x1a\n", 16, 32, 3, *size, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, *[1.0] * 8)
    struct.pack_into("<qd", header, 168, 544, 1.0)
    path.write_bytes(bytes(header) + b"\0" * 64)


def metaimage(path, size):
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = %d %d %d\nElementType = MET_FLOAT\n"
                    "ElementDataFile = LOCAL\n" % size)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 64)


def dicom(folder, size):
    """A 4-file series whose Rows x Columns say 65535 x 65535 (the most DICOM can declare)."""
    write_series(folder, np.zeros((4, 16, 16)), "MR")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = size[1], size[0]
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        path.write_bytes(buffer.getvalue())


CASES = {
    "NRRD 100000^3": ("huge.nrrd", nrrd, (100000,) * 3, "over the limit"),
    "MetaImage 100000^3": ("huge.mha", metaimage, (100000,) * 3, "over the limit"),
    "NIfTI-1 32767^3 (its largest)": ("huge.nii", nifti1, (32767,) * 3, "over the limit"),
    "NIfTI-2 100000^3": ("huge2.nii", nifti2, (100000,) * 3, "not a readable image"),  # ITK reads NIfTI-1 only
    "DICOM 65535 x 65535 x 4 files": ("huge_series", dicom, (65535, 65535), "over the limit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_absurd_sizes_are_refused_before_allocation(tmp_path, tally, case):
    name, make, size, words = CASES[case]
    make(tmp_path / name, size)
    started = time.monotonic()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with pytest.raises(DuiitError, match=words) as error:
        read_volume(tmp_path / name)
    assert name in str(error.value)
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak < 100 * 2 ** 20
    tally.add("absurd sizes")
    tally.report("limits", f"refused {tally.counts['absurd sizes']} files declaring absurd sizes (NRRD, MetaImage, "
                           f"NIfTI-1/2, DICOM) before allocating: limit {MAX_VOXELS} voxels (DUIIT_MAX_VOXELS)")


def test_the_limit_is_configurable(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((4, 16, 16), np.float32))  # 1024 voxels
    sitk.WriteImage(image, str(tmp_path / "small.nrrd"))
    code = ("import sys; from duiit.volume_io import read_volume, MAX_VOXELS; from duiit.errors import DuiitError\n"
            "try:\n    read_volume(sys.argv[1]); print('loaded', MAX_VOXELS)\n"
            "except DuiitError as e:\n    print(e)")
    for limit, expected in (("1000", "over the limit of 1000 (set DUIIT_MAX_VOXELS"), ("1024", "loaded 1024")):
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "small.nrrd")], capture_output=True,
                                text=True, cwd=ROOT, env={**os.environ, "DUIIT_MAX_VOXELS": limit}, timeout=120)
        assert expected in result.stdout, (result.stdout, result.stderr)
