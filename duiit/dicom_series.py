"""One DICOM series in a folder: find it, check it is a single image series, read its header tags."""

import mmap
import struct
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
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        problem = declared_length_problem(path) if path.is_file() else ""
        if problem:
            raise DuiitError(f"{path}: damaged DICOM file ({problem})")
    try:  # GDCM raises (instead of skipping the file) for some malformed headers
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise DuiitError(f"{folder}: a damaged DICOM file in this folder ({_first_line(exc)})") from None
    if not ids:
        raise DuiitError(f"{folder}: no DICOM image series in this folder")
    if series_uid:
        if series_uid not in ids:
            raise DuiitError(f"{folder}: has no DICOM series {series_uid}")
        ids = [series_uid]
    if len(ids) > 1:
        raise DuiitError(f"{folder}: mixed series, {len(ids)} DICOM series in one folder "
                         f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); give one series per folder")
    try:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    except RuntimeError as exc:
        raise DuiitError(f"{folder}: a damaged DICOM file in this folder ({_first_line(exc)})") from None
    if not files:
        raise DuiitError(f"{folder}: no readable files in DICOM series {ids[0]}")
    return DicomSeries(folder, files, read_tags(files[0]))


def _first_line(exc) -> str:
    """The informative part of a GDCM/ITK message (its last line, without the source location)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


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


# Explicit-VR encodings whose length field has 4 bytes (after 2 reserved ones); the other VRs have 2.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_UNDEFINED = 0xFFFFFFFF
_NOT_WALKED = ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")  # big endian, deflated


def declared_length_problem(path) -> str:
    """GDCM allocates the length an element declares before reading it, so one damaged byte in a header
    can make a folder scan take gigabytes and many seconds. Walk the element headers of a little-endian
    DICOM file (without reading values); a value that would run past the end of the file is damage.
    Returns "" for sound files and for what this walk does not cover (no DICM preamble, big endian,
    deflated, implicit-VR data inside UN elements)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                return ""
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _walk(data)
    except (OSError, ValueError):
        return ""


def _walk(data) -> str:
    size, pos, explicit = len(data), 132, True
    while pos + 8 <= size:
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if group == 0xFFFE:  # item and delimiters: always 4-byte lengths
            length, header = struct.unpack_from("<I", data, pos + 4)[0], 8
            if element == 0xE000 and length != _UNDEFINED and pos + 8 + length > size:
                return f"an item declares {length} bytes, only {size - pos - 8} remain"
            pos += 8  # into the item (a nested data set is walked like the top level)
            continue
        if (explicit or group == 2) and vr in _VRS:  # the meta group is always explicit VR
            if vr in _LONG_VRS:
                if pos + 12 > size:
                    return "the file ends inside an element header"
                length, header = struct.unpack_from("<I", data, pos + 8)[0], 12
            else:
                length, header = struct.unpack_from("<H", data, pos + 6)[0], 8
        else:  # implicit VR; or a damaged VR, which GDCM reads as the first half of a 4-byte length
            length, header = struct.unpack_from("<I", data, pos + 4)[0], 8
        if length == _UNDEFINED:
            if (group, element) == (0x7FE0, 0x0010):
                return _fragments(data, pos + header)
            if explicit and vr != b"SQ":
                return ""  # UN of undefined length holds implicit-VR data: not walked
            pos += header
            continue
        if pos + header + length > size:
            return f"element ({group:04X},{element:04X}) declares {length} bytes, only {size - pos - header} remain"
        if group == 2 and element == 0x0010:  # transfer syntax: how the data set after the meta group is encoded
            syntax = bytes(data[pos + header:pos + header + length]).strip(b"\0 ").decode("ascii", "replace")
            if syntax in _NOT_WALKED:
                return ""
            explicit = syntax != "1.2.840.10008.1.2"
        pos += header + (0 if explicit and vr == b"SQ" else length)  # into a sequence, over other values
    return ""


def _fragments(data, pos) -> str:
    """Encapsulated (compressed) pixel data: items of raw bytes up to the sequence delimiter."""
    size = len(data)
    while pos + 8 <= size:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if (group, element) != (0xFFFE, 0xE000):
            return ""
        if pos + 8 + length > size:
            return f"a pixel data fragment declares {length} bytes, only {size - pos - 8} remain"
        pos += 8 + length
    return ""
