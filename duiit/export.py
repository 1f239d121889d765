"""Exporting the translated source cohort: each source volume as a CT-like volume, plus labels.csv.

A bad volume is reported and skipped; the batch goes on. Each output is written atomically. A failed
write (a full disk, a lost share) stops the batch instead, since every later volume would fail the same
way; the volumes already written stay, and an earlier labels.csv is left as it was.
"""

import re
from pathlib import Path

from .bundle import Bundle
from .dicom_series import find_series
from .errors import DuiitError
from .manifest import read_manifest, write_manifest
from .translate import translate_volume
from .volume_io import read_volume, write_volume


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "case"


def export_cohort(bundle: Bundle, manifest, out_dir, device="auto", report=None) -> dict:
    """Translate every source case of `manifest`; returns {"written": [...], "failed": [(case, message)]}."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DuiitError(f"{out_dir}: cannot create the export folder ({exc.strerror})") from None
    source = bundle.header["source_modality"]
    cases = [c for c in read_manifest(manifest, require_labels=False) if c.modality == source]
    if not cases:
        raise DuiitError(f"{manifest}: no {source} cases to export")
    rows, failed, used = [], [], set()
    for n, case in enumerate(cases):
        name = _safe_name(f"{case.patient_id}_{case.path.name.split('.')[0]}")
        while name in used:
            name += "_"
        used.add(name)
        try:
            tags = find_series(case.path, case.series_uid).tags if case.path.is_dir() else None
            image = read_volume(case.path, case.series_uid)
            translation = translate_volume(bundle, image, device=device, series_tags=tags)
        except DuiitError as exc:
            failed.append((case.name, str(exc)))
            if report:
                report(n + 1, len(cases), case, str(exc))
            continue
        path = out_dir / f"{name}.nii.gz"
        try:
            write_volume(translation.ct, path)
        except DuiitError as exc:
            raise DuiitError(f"{exc}; export stopped after {len(rows)} of {len(cases)} volumes "
                             "(labels.csv not updated)") from None
        del image, translation  # freed before the next volume is read: one volume in memory at a time
        rows.append({"path": path.name, "modality": "CT", "label": case.label, "patient_id": case.patient_id,
                     "source_path": str(case.path), "translated_from": source})
        if report:
            report(n + 1, len(cases), case, None)
    if rows:
        write_manifest(rows, out_dir / "labels.csv")
    return {"written": [r["path"] for r in rows], "failed": failed}

