"""One DICOM series in a folder: find it, check it is a single image series, read its header tags."""

from dataclasses import dataclass
from pathlib import Path

import pydicom
import SimpleITK as sitk

from .errors import DuiitError

# Tags the core needs from a series header (PET SUV, modality checks, manifests).
SERIES_TAGS = (
    "Modality", "PatientID", "PatientName", "PatientAge", "PatientSex", "PatientWeight",
    "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription", "StudyDescription",
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "Units", "DecayCorrection",
    "CorrectedImage",
)


@dataclass
class DicomSeries:
    folder: Path
    files: list  # sorted by slice position (the order of the image's k axis)
    tags: dict   # SERIES_TAGS of the first file, plus "Radiopharmaceutical" for PET


def find_series(folder, series_uid: str = "") -> DicomSeries:
    """The image series in `folder` (the one with `series_uid` if given); a clear error for none or several."""
    folder = Path(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise DuiitError(f"{folder}: no DICOM image series in this folder")
    if series_uid:
        if series_uid not in ids:
            raise DuiitError(f"{folder}: has no DICOM series {series_uid}")
        ids = [series_uid]
    if len(ids) > 1:
        raise DuiitError(f"{folder}: mixed series, {len(ids)} DICOM series in one folder "
                         f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); give one series per folder")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return DicomSeries(folder, files, read_tags(files[0]))


def read_tags(path) -> dict:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise DuiitError(f"{path}: not a readable DICOM file ({exc})") from None
    tags = {}
    for name in SERIES_TAGS:
        value = ds.get(name)
        if value is not None and value != "":
            tags[name] = str(value)
    info = ds.get("RadiopharmaceuticalInformationSequence")
    if info:
        item = info[0]
        tags["Radiopharmaceutical"] = {
            name: str(item.get(name)) for name in (
                "RadionuclideTotalDose", "RadionuclideHalfLife", "RadiopharmaceuticalStartTime",
                "RadiopharmaceuticalStartDateTime") if item.get(name) not in (None, "")}
    return tags
