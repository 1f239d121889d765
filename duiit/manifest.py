"""The training manifest: a CSV with one row per volume (path, modality, label, patient_id, ...)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import DuiitError

EXTRA = "\0extra"  # where csv puts the fields of a row beyond the header's columns
REQUIRED = ("path", "modality", "label", "patient_id")
OPTIONAL = ("study_uid", "series_uid", "split", "mask")
MODALITIES = ("CT", "MR", "PT")
SPLITS = ("train", "val", "test", "unlabelled")
# A target-modality case with this split has no label: it trains the translator's target side only (its
# discriminator, cycle and identity terms), never the predictor. Few CTs are labelled; many more exist.
UNLABELLED = "unlabelled"


@dataclass
class Case:
    path: Path
    modality: str
    label: str
    patient_id: str
    study_uid: str = ""
    series_uid: str = ""
    split: str = ""
    mask: Path | None = None
    row: int = 0  # line number in the CSV, for messages

    @property
    def labelled(self) -> bool:
        return self.split != UNLABELLED

    @property
    def name(self) -> str:
        return f"{self.patient_id} ({self.path.name})"


def read_manifest(path, require_labels=True) -> list[Case]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, restkey=EXTRA)
            rows = list(reader)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
    except FileNotFoundError:
        raise DuiitError(f"{path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DuiitError(f"{path}: not a readable CSV manifest ({exc})") from None
    if not rows:
        raise DuiitError(f"{path}: the manifest has no rows")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DuiitError(f"{path}: the manifest lacks the column(s) {', '.join(missing)}")
    return [_case(path, number, row, require_labels) for number, row in enumerate(rows, start=2)]


def _case(manifest: Path, number: int, row: dict, require_labels: bool) -> Case:
    where = f"{manifest}, line {number}"
    if any(v.strip() for v in row.pop(EXTRA, [])):
        raise DuiitError(f"{where}: more fields than the header has columns")
    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
    if not row["path"]:
        raise DuiitError(f"{where}: empty path")
    modality = row["modality"].upper()
    if modality not in MODALITIES:
        raise DuiitError(f"{where}: modality {row['modality']!r} is not one of {', '.join(MODALITIES)}")
    if not row["patient_id"]:
        raise DuiitError(f"{where}: {row['path']} has no patient_id")
    split = row.get("split", "").lower()
    if split and split not in SPLITS:
        raise DuiitError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    if require_labels and not row["label"] and split != UNLABELLED:
        raise DuiitError(f"{where}: case {row['patient_id']} ({row['path']}) has no label (give one, or the split "
                         f"{UNLABELLED!r} for a target-modality case that should train the translator only)")
    mask = row.get("mask", "")
    return Case(path=_resolve(manifest, row["path"], where), modality=modality, label=row["label"],
                patient_id=row["patient_id"], study_uid=row.get("study_uid", ""),
                series_uid=row.get("series_uid", ""), split=split,
                mask=_resolve(manifest, mask, where) if mask else None, row=number)


def _resolve(manifest: Path, value: str, where: str = "") -> Path:
    """Relative paths are relative to the manifest's folder, so a cohort folder can move. A path the
    system cannot even look up (a NUL byte, a name too long, an unknown ~user) is refused here."""
    try:
        if "\0" in value:
            raise ValueError("a NUL character")
        candidate = Path(value).expanduser()
        candidate = candidate if candidate.is_absolute() else manifest.parent / candidate
        candidate.exists()
    except (OSError, ValueError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DuiitError(f"{where or manifest}: unusable path {value[:80]!r} ({reason})") from None
    return candidate


def write_manifest(rows: list[dict], path) -> None:
    from .atomic import atomic_path
    columns = list(REQUIRED) + [c for c in OPTIONAL if any(c in r for r in rows)]
    extra = sorted({k for r in rows for k in r} - set(columns))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns + extra)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in columns + extra})
