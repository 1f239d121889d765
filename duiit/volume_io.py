"""Reading and writing 3D volumes (NIfTI, NRRD, MHA files or DICOM series folders) with their geometry.

Every volume that enters DUIIT passes `read_volume`, which refuses what the networks cannot use:
non-images, 2D or 4D images, vector pixels, NaN voxels and headers declaring absurd sizes.
"""

import gzip
import os
import re
import zlib
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
    try:
        if not path.exists():
            raise DuiitError(f"{path}: no such file or folder")
        is_folder = path.is_dir()
    except OSError as exc:  # e.g. a name too long, a folder without read permission
        raise DuiitError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if is_folder:
        series = find_series(path, series_uid)
        _check_series_size(path, series.files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(series.files)
        return _validated(path, _execute(path, reader))
    if not file_extension(path) and path.suffix.lower() not in (".mhd", ".nhdr", ".dcm"):
        raise DuiitError(f"{path}: not a volume file (expected {', '.join(FILE_EXTENSIONS)} or a DICOM folder)")
    if path.suffix.lower() in (".mha", ".mhd"):
        _check_metaimage_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DuiitError(f"{path}: not a readable image file") from None
    _check_header(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    if file_extension(path) in (".nii", ".nii.gz"):
        problem = _nifti_data_problem(path, reader)
        if problem:
            raise DuiitError(f"{path}: {problem}")
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
    _check_size(path, size[:3])


def _check_size(path, size):
    voxels = int(np.prod([int(s) for s in size], dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise DuiitError(f"{path}: declares {voxels} voxels ({'x'.join(map(str, size))}), over the limit of "
                         f"{MAX_VOXELS} (set DUIIT_MAX_VOXELS to change it)")


def _check_series_size(path, files):
    """ITK allocates the whole series from the first file's Rows x Columns (x frames) before reading any
    pixel: check that size against the limit first. (Later files of another size fail ITK's own check.)"""
    first = sitk.ImageFileReader()
    first.SetFileName(str(files[0]))
    try:
        first.ReadImageInformation()
    except RuntimeError:
        raise DuiitError(f"{files[0]}: not a readable DICOM image") from None
    size = list(first.GetSize()) + [1, 1]
    _check_size(path, (size[0], size[1], max(int(size[2]), 1) * len(files)))


# MetaImage headers that crash ITK's MetaIO parser (segmentation fault, abort or division by zero)
# instead of raising an error: an out-of-range NDims, and file-name patterns / lists for the data.
_META_KEY = re.compile(rb"^\s*([A-Za-z]+)\s*[=:]\s*(.*?)\s*$")


def _check_metaimage_header(path):
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        raise DuiitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for line in head.split(b"\n"):
        match = _META_KEY.match(line)
        if not match:
            continue
        key, value = match.group(1).lower(), match.group(2)
        if key == b"ndims" and not (value.isdigit() and 2 <= int(value) <= 5):
            shown = value[:20].decode(errors="replace")
            raise DuiitError(f"{path}: not a readable image file (MetaImage NDims = {shown!r})")
        if key == b"elementdatafile":
            if value.upper().startswith(b"LIST") or b"%" in value:
                raise DuiitError(f"{path}: MetaImage data split over several files (ElementDataFile = "
                                 f"{value[:40].decode(errors='replace')!r}) is not supported; use one .mha file")
            return  # the header ends here


# Bytes per voxel of each NIfTI datatype code, as stored on disk (the truncation check below).
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}


def _nifti_data_problem(path, reader) -> str:
    """ITK's NIfTI reader fills missing voxels with zeros, and its writer ignores failed writes (a full
    disk), instead of raising: check that the file holds all the bytes its header declares."""
    try:
        meta = {k: reader.GetMetaData(k) for k in ("datatype", "vox_offset", "dim[0]")}
        rank = min(max(int(meta["dim[0]"]), 0), 7)
        dims = [max(int(reader.GetMetaData(f"dim[{k}]")), 1) for k in range(1, rank + 1)]
        item = _NIFTI_BYTES[int(meta["datatype"])]
        offset = float(meta["vox_offset"])
    except (RuntimeError, ValueError, KeyError):
        return ""  # ITK read the header without these fields: nothing to compare with
    offset = int(offset) if np.isfinite(offset) and offset > 348 else 348  # as niftilib reads it
    needed = offset + int(np.prod(dims, dtype=np.float64)) * item
    try:
        if str(path).lower().endswith(".gz"):
            available = 0
            with gzip.open(path, "rb") as handle:
                while available < needed:
                    chunk = handle.read(min(needed - available, 1 << 22))
                    if not chunk:
                        break
                    available += len(chunk)
        else:
            available = os.path.getsize(path)
    except (OSError, EOFError, zlib.error):
        return "damaged or truncated NIfTI file (the compressed data is incomplete)"
    if available < needed:
        return f"truncated NIfTI file ({available} bytes of the {needed} its header declares)"
    return ""


def _validated(path, image: sitk.Image) -> sitk.Image:
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    _check_header(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    if image.GetSize()[2] < 2:
        raise DuiitError(f"{path}: has a single slice (2D); DUIIT needs a 3D volume")
    try:
        image = sitk.Cast(image, sitk.sitkFloat32)
    except RuntimeError:  # e.g. a one-component vector or complex pixel type
        raise DuiitError(f"{path}: has an unsupported pixel type ({image.GetPixelIDTypeAsString()}); "
                         "DUIIT needs a scalar (grey-level) volume") from None
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
        if ext in (".nii", ".nii.gz"):  # ITK's NIfTI writer does not report failed writes: check the file
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(tmp))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise OSError("the written file is unreadable") from None
            problem = _nifti_data_problem(tmp, reader)
            if problem:
                raise OSError(f"the file was not written completely: {problem}")
