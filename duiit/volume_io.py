"""Reading and writing 3D volumes (NIfTI, NRRD, MHA files or DICOM series folders) with their geometry.

Every volume that enters DUIIT passes `read_volume`, which refuses what the networks cannot use:
non-images, 2D or 4D images, vector pixels, NaN voxels and headers declaring absurd sizes.
"""

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory, atomic_path
from .dicom_series import find_series
from .errors import DuiitError

FILE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
# Refuse headers that declare more voxels than this before any memory is allocated.
MAX_VOXELS = int(os.environ.get("DUIIT_MAX_VOXELS", 1024 ** 3))


def file_extension(path) -> str:
    name = str(path).lower()
    for ext in FILE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return ""


def is_dicom_output(path) -> bool:
    """A path with no volume file extension is written as a DICOM series folder."""
    return file_extension(path) == "" and Path(path).suffix == ""


def read_volume(path, series_uid: str = "") -> sitk.Image:
    """A validated 3D scalar image (float32) with its geometry, from a file or a DICOM series folder
    (the series `series_uid` when the folder holds several)."""
    path = Path(path)
    if not path.exists():
        raise DuiitError(f"{path}: no such file or folder")
    if path.is_dir():
        series = find_series(path, series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(series.files)
        return _validated(path, _execute(path, reader))
    if not file_extension(path) and path.suffix.lower() not in (".mhd", ".nhdr", ".dcm"):
        raise DuiitError(f"{path}: not a volume file (expected {', '.join(FILE_EXTENSIONS)} or a DICOM folder)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DuiitError(f"{path}: not a readable image file") from None
    _check_header(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    return _validated(path, _execute(path, reader))


def _execute(path, reader) -> sitk.Image:
    try:
        return reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise DuiitError(f"{path}: cannot read the image ({first[:200]})") from None


def _check_header(path, dimension, size, components):
    if dimension == 4 and size[3] == 1:
        dimension = 3
    if dimension != 3:
        raise DuiitError(f"{path}: is a {dimension}D image; DUIIT needs a 3D volume")
    if components != 1:
        raise DuiitError(f"{path}: has {components} values per voxel; DUIIT needs a scalar (grey-level) volume")
    voxels = int(np.prod([int(s) for s in size[:3]], dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise DuiitError(f"{path}: declares {voxels} voxels ({'x'.join(map(str, size[:3]))}), over the limit of "
                         f"{MAX_VOXELS} (set DUIIT_MAX_VOXELS to change it)")


def _validated(path, image: sitk.Image) -> sitk.Image:
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    _check_header(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    if image.GetSize()[2] < 2:
        raise DuiitError(f"{path}: has a single slice (2D); DUIIT needs a 3D volume")
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DuiitError(f"{path}: has {bad} NaN or infinite voxels")
    return image


def write_volume(image: sitk.Image, path, dicom_tags=None) -> None:
    """Write atomically; a path without a volume extension becomes a DICOM series folder."""
    path = Path(path)
    if is_dicom_output(path):
        from .dicom_writer import write_dicom_series
        with atomic_directory(path) as tmp:
            write_dicom_series(image, tmp, dicom_tags or {})
        return
    ext = file_extension(path)
    if not ext:
        raise DuiitError(f"{path}: unknown output format (use {', '.join(FILE_EXTENSIONS)} or a folder for DICOM)")
    with atomic_path(path, suffix=ext) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=ext != ".nii")
        except RuntimeError as exc:
            raise OSError(str(exc).strip().splitlines()[-1]) from None
