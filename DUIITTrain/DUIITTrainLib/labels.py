"""Labels for the series a user ticks in DUIIT Train: typed, from a CSV, or from a DICOM tag (no qt).

- A label CSV is keyed by PatientID, StudyInstanceUID or SeriesInstanceUID (any of them; the most specific
  key that matches a series wins) and has a label column (named "label", or the one non-key column).
- A DICOM tag label reads one tag of the series' first file through the database's fileValue; ages
  ("045Y", "006M", "010W", "003D") become years, so PatientAge works for regression.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from duiit.errors import DuiitError

# CSV column names accepted for each key, most specific first.
KEY_COLUMNS = {
    "series": ("seriesinstanceuid", "series_uid", "seriesuid", "series"),
    "study": ("studyinstanceuid", "study_uid", "studyuid", "study"),
    "patient": ("patientid", "patient_id", "patient"),
}
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_TAG = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")


def parse_age(text) -> float:
    """A DICOM age string (AS: nnnD, nnnW, nnnM, nnnY) or a plain number, in years."""
    text = str(text).strip()
    match = _AGE.match(text)
    if match:
        return int(match.group(1)) * _AGE_UNITS[match.group(2).upper()]
    try:
        return float(text)
    except ValueError:
        raise DuiitError(f"{text!r} is not an age (DICOM ages look like 045Y, 006M, 010W or 003D)") from None


def format_number(value: float) -> str:
    """A compact label text for a number: 45 -> '45', 0.5 -> '0.5', 0.19165 -> '0.1917'."""
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"


def dicom_tag(tag: str) -> str:
    """'PatientAge', '(0010,1010)', '0010,1010' or '00101010' -> '0010,1010' (the form fileValue takes)."""
    text = str(tag).strip()
    match = _TAG.match(text)
    if match:
        return f"{match.group(1).upper()},{match.group(2).upper()}"
    from pydicom.datadict import tag_for_keyword
    number = tag_for_keyword(text)
    if number is None:
        raise DuiitError(f"{tag!r} is not a DICOM tag keyword (like PatientAge) or number (like 0010,1010)")
    return f"{number >> 16:04X},{number & 0xFFFF:04X}"


def label_from_tag_value(tag: str, value: str, task: str) -> str:
    """The label text for a tag value: ages in years; numbers for regression; the text for classification."""
    value = (value or "").strip()
    if not value:
        return ""
    if dicom_tag(tag) == "0010,1010" or (task == "regression" and _AGE.match(value)):
        return format_number(parse_age(value))
    if task == "regression":
        try:
            return format_number(float(value))
        except ValueError:
            raise DuiitError(f"tag {tag} has the value {value!r}, which is not a number for regression") from None
    return value


def labels_from_dicom_tag(database, series_list, tag: str, task: str) -> dict:
    """{series_uid: label} from one tag of each series' first file (empty label where the tag is absent)."""
    key = dicom_tag(tag)
    labels = {}
    for series in series_list:
        value = database.fileValue(series.files[0], key) if series.files else ""
        labels[series.series_uid] = label_from_tag_value(tag, value, task)
    return labels


@dataclass
class LabelTable:
    """Labels read from a CSV, with lookups by series, study and patient."""
    path: Path
    label_column: str
    maps: dict = field(default_factory=dict)  # key kind -> {key value: label}

    def lookup(self, series) -> str | None:
        """The label of a SeriesInfo-like object (series_uid, study_uid, patient_id), most specific key first."""
        for kind, attribute in (("series", "series_uid"), ("study", "study_uid"), ("patient", "patient_id")):
            value = str(getattr(series, attribute, "") or "").strip()
            if value and value in self.maps.get(kind, {}):
                return self.maps[kind][value]
        return None

    @property
    def keys(self) -> list:
        return [kind for kind in ("series", "study", "patient") if kind in self.maps]


def read_label_csv(path, label_column: str | None = None) -> LabelTable:
    """Read a label CSV keyed by PatientID, StudyInstanceUID and/or SeriesInstanceUID."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            rows = list(csv.DictReader(handle, dialect=dialect))
    except FileNotFoundError:
        raise DuiitError(f"{path}: no such label file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DuiitError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DuiitError(f"{path}: the label file has no rows")
    header = [h for h in rows[0].keys() if h is not None]
    lower = {h.strip().lower(): h for h in header}
    key_columns = {}
    for kind, names in KEY_COLUMNS.items():
        for name in names:
            if name in lower:
                key_columns[kind] = lower[name]
                break
    if not key_columns:
        raise DuiitError(f"{path}: needs a PatientID, StudyInstanceUID or SeriesInstanceUID column "
                         f"(found: {', '.join(header)})")
    if label_column:
        if label_column not in header and label_column.lower() not in lower:
            raise DuiitError(f"{path}: has no column {label_column!r} (found: {', '.join(header)})")
        label_column = label_column if label_column in header else lower[label_column.lower()]
    elif "label" in lower:
        label_column = lower["label"]
    else:
        others = [h for h in header if h not in key_columns.values()]
        if len(others) != 1:
            raise DuiitError(f"{path}: which column is the label? Name it 'label' (found: {', '.join(header)})")
        label_column = others[0]
    table = LabelTable(path=path, label_column=label_column)
    for number, row in enumerate(rows, start=2):
        label = (row.get(label_column) or "").strip()
        if not label:
            continue
        for kind, column in key_columns.items():
            key = (row.get(column) or "").strip()
            if not key:
                continue
            previous = table.maps.setdefault(kind, {}).get(key)
            if previous is not None and previous != label:
                raise DuiitError(f"{path}, line {number}: {column} {key} has two labels ({previous!r} and {label!r})")
            table.maps[kind][key] = label
    return table


def check_labels(labels, task: str) -> list:
    """Problems with a list of label texts for a task (empty list: fine)."""
    problems = []
    missing = sum(1 for label in labels if not str(label).strip())
    if missing:
        problems.append(f"{missing} selected series have no label")
    present = [str(label).strip() for label in labels if str(label).strip()]
    if task == "regression":
        bad = []
        for label in present:
            try:
                float(label)
            except ValueError:
                bad.append(label)
        if bad:
            problems.append(f"regression needs numbers; these labels are not: {', '.join(sorted(set(bad))[:5])}")
    elif present and len(set(present)) < 2:
        problems.append(f"classification needs at least two classes; all labels are {present[0]!r}")
    return problems
