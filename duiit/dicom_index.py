"""Indexing DICOM files: a folder-backed database with the methods of Slicer's ctkDICOMDatabase,
and a series listing that works on either (so the Slicer panel and the CLI share one code path)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from .errors import DuiitError

INDEXED_TAGS = {
    "0008,0060": "Modality", "0010,0020": "PatientID", "0010,0010": "PatientName", "0010,1010": "PatientAge",
    "0010,0040": "PatientSex", "0010,1030": "PatientWeight", "0020,000D": "StudyInstanceUID",
    "0020,000E": "SeriesInstanceUID", "0008,103E": "SeriesDescription", "0008,1030": "StudyDescription",
    "0008,0020": "StudyDate", "0008,0016": "SOPClassUID", "0008,0018": "SOPInstanceUID", "0028,0010": "Rows",
}
IMAGE_MODALITIES_EXCLUDED = ("SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "REG", "SEG", "DOC")


class FolderDicomDatabase:
    """The DICOM files under a folder, read with pydicom (headers only), queried like ctkDICOMDatabase."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DuiitError(f"{self.folder}: not a folder")
        self._values = {}   # file -> {tag key: value}
        self._instances = {}  # SOPInstanceUID -> file
        self._tree = {}     # patient -> study -> series -> [files]
        for root, _, names in os.walk(self.folder):
            for name in sorted(names):
                self._add(os.path.join(root, name))

    def _add(self, path: str):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError, EOFError):
            return  # not DICOM (or unreadable): not part of the database, as in Slicer's importer
        values = {}
        for key, keyword in INDEXED_TAGS.items():
            value = ds.get(keyword)
            values[key] = "" if value is None else str(value)
        if not values["0020,000E"] or not values["0020,000D"]:
            return
        self._values[path] = values
        self._instances[values["0008,0018"]] = path
        patient = values["0010,0020"] or "(no PatientID)"
        self._tree.setdefault(patient, {}).setdefault(values["0020,000D"], {}).setdefault(
            values["0020,000E"], []).append(path)

    def patients(self):
        return sorted(self._tree)

    def studiesForPatient(self, patient):
        return sorted(self._tree.get(patient, {}))

    def seriesForStudy(self, study):
        for studies in self._tree.values():
            if study in studies:
                return sorted(studies[study])
        return []

    def filesForSeries(self, series):
        for studies in self._tree.values():
            for series_map in studies.values():
                if series in series_map:
                    return list(series_map[series])
        return []

    def fileForInstance(self, sop_instance_uid):
        return self._instances.get(sop_instance_uid, "")

    def fileValue(self, file, tag):
        return self._values.get(str(file), {}).get(tag.upper().replace("|", ","), "")


@dataclass
class SeriesInfo:
    patient_id: str
    patient_name: str
    study_uid: str
    study_description: str
    series_uid: str
    series_description: str
    modality: str
    n_images: int
    files: list = field(default_factory=list, repr=False)

    @property
    def folder(self) -> str:
        return os.path.commonpath([os.path.dirname(f) for f in self.files]) if self.files else ""


def list_series(database, modalities=None) -> list:
    """Image series in `database` (FolderDicomDatabase or slicer.dicomDatabase), optionally by modality."""
    wanted = {m.upper() for m in modalities} if modalities else None
    found = []
    for patient in database.patients():
        for study in database.studiesForPatient(patient):
            for series in database.seriesForStudy(study):
                files = list(database.filesForSeries(series))
                if not files:
                    continue
                value = lambda tag: (database.fileValue(files[0], tag) or "").strip()  # noqa: E731
                modality = value("0008,0060").upper()
                if modality in IMAGE_MODALITIES_EXCLUDED or (wanted and modality not in wanted):
                    continue
                found.append(SeriesInfo(value("0010,0020"), value("0010,0010"), study, value("0008,1030"), series,
                                        value("0008,103E"), modality, len(files), files))
    return found


def manifest_rows(series_list: list) -> list:
    """Manifest rows (label empty) for the `index` command and the Slicer panel."""
    return [{"path": s.folder, "modality": s.modality, "label": "", "patient_id": s.patient_id,
             "study_uid": s.study_uid, "series_uid": s.series_uid} for s in series_list]
