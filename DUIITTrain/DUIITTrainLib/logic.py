"""What DUIIT Train does besides widgets (no qt): list series, stage them, write the manifest, build the
worker's command line. Works with slicer.dicomDatabase or duiit.dicom_index.FolderDicomDatabase.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from duiit.errors import DuiitError
# METHODS, GUIDE_PREDICTORS, TASKS, the modalities: also the panel's choices; torch-free, so the panel can check
# settings before torch is installed
from duiit.training_options import (GUIDE_PREDICTORS, METHODS, SOURCE_MODALITIES, TARGET_MODALITIES, TASKS,
                                    TRANSLATING_METHODS, TrainingOptions, check_guide_options, guide_class_names)

from .labels import check_labels

PRESETS = ("small", "reference")
MAX_HEAD_DEPTH = 256  # duiit train --head-depth takes 0..256 rings
MODEL_NAME = "model.duiit"


@dataclass
class TrainSettings:
    output_folder: str
    source_modality: str = "MR"
    target_modality: str = "CT"
    task: str = "classification"
    method: str = "duiit"
    iterations: int = 2000
    image_size: int = 128
    preset: str = "small"
    head_depth: int = 0  # rings of head depth the discriminators see (duiit train --head-depth; 0: off)
    depth_from_input: bool = False  # D judges a translation by its input's depth map (duiit train --depth-from-input)
    mr_standard: bool = True  # MR histograms onto the training MR's standard (duiit train --no-mr-standard)
    predictor_augment: bool = False  # C's training slices mirrored and shifted (duiit train --predictor-augment)
    guide_predictor: str = "joint"  # which predictor steers the translator (duiit train --guide-predictor)
    guide_classes: str = ""  # the classes whose source slices steer it ("": all; --guide-classes)
    guide_pretrain: int = 0  # steps the target guide learns alone first (--guide-pretrain; 0: off)
    guide_inverted_lesions: bool = False  # the target guide also learns its lesions inverted (--guide-inverted-lesions)
    guide_erased_lesions: bool = False  # the guide also judges source lesions erased (--guide-erased-lesions)
    predictor_erased_lesions: bool = False  # and the predictor learns them too (--predictor-erased-lesions)
    device: str = "auto"
    extra_args: list = field(default_factory=list)

    def check(self) -> None:
        if not str(self.output_folder).strip():
            raise DuiitError("choose an output folder")
        if self.source_modality not in SOURCE_MODALITIES:
            raise DuiitError(f"source modality {self.source_modality!r} is not one of {', '.join(SOURCE_MODALITIES)}")
        if self.target_modality not in TARGET_MODALITIES:
            raise DuiitError(f"target modality {self.target_modality!r} is not one of {', '.join(TARGET_MODALITIES)}")
        if self.task not in TASKS:
            raise DuiitError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise DuiitError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if int(self.iterations) < 1 or int(self.image_size) < 16:
            raise DuiitError("iterations must be at least 1 and the image size at least 16 px")
        if not 0 <= int(self.head_depth) <= MAX_HEAD_DEPTH:
            raise DuiitError(f"head depth {self.head_depth}: must be from 0 to {MAX_HEAD_DEPTH} rings")
        if self.depth_from_input and not int(self.head_depth):
            raise DuiitError("judging translations by their input's head depth needs a head depth above 0 rings")
        check_guide_options(TrainingOptions(
            method=self.method, task=self.task, guide_predictor=self.guide_predictor,
            guide_classes=self.guide_classes, guide_pretrain=int(self.guide_pretrain),
            guide_inverted_lesions=bool(self.guide_inverted_lesions),
            guide_erased_lesions=bool(self.guide_erased_lesions),
            predictor_erased_lesions=bool(self.predictor_erased_lesions)))

    # Where things go in the output folder.
    @property
    def folder(self) -> Path:
        return Path(self.output_folder).expanduser()

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.csv"

    @property
    def model(self) -> Path:
        return self.folder / MODEL_NAME

    @property
    def checkpoint(self) -> Path:
        return Path(str(self.model) + ".ckpt")

    @property
    def report(self) -> Path:
        return self.folder / "report"

    @property
    def cohort(self) -> Path:
        return self.folder / "cohort"

    @property
    def series_folder(self) -> Path:
        return self.folder / "series"


def list_candidate_series(database, target: str, source: str) -> list:
    """SeriesInfo of the target and source modalities in the database (target first, then source)."""
    from duiit.dicom_index import list_series
    series = list_series(database, modalities=[target, source])
    order = {target: 0, source: 1}
    return sorted(series, key=lambda s: (order.get(s.modality, 2), s.patient_id, s.study_uid, s.series_description))


def stage_series(series, staging_folder) -> Path:
    """A folder from which duiit reads this series (with the manifest's series_uid picking it out).

    The folder of the series' files when they share one (Slicer's database keeps one folder per series;
    a folder that holds other series too is fine, the series_uid selects); otherwise a folder of links
    (copies where links are not allowed) under `staging_folder`.
    """
    files = [Path(f) for f in series.files]
    if not files:
        raise DuiitError(f"series {series.series_uid}: has no files in the database")
    if len({f.parent for f in files}) == 1:
        return files[0].parent
    target = Path(staging_folder) / _safe_name(series.series_uid)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for number, source in enumerate(files):
        link = target / f"{number:05d}_{source.name}"
        try:
            os.symlink(source.resolve(), link)
        except (OSError, NotImplementedError):
            shutil.copy2(source, link)
    return target


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in str(text)) or "series"


def unlabelled(label) -> bool:
    return not str(label).strip()


def manifest_rows(selected, staging_folder, target_modality: str = "CT") -> list:
    """Manifest rows for [(SeriesInfo, label), ...]: the series' folder and its series_uid. A target series
    without a label gets the split "unlabelled": it trains the translator only."""
    from duiit.manifest import UNLABELLED
    rows = []
    for series, label in selected:
        row = {
            "path": str(stage_series(series, staging_folder)),
            "modality": series.modality,
            "label": str(label).strip(),
            "patient_id": _patient(series),
            "study_uid": series.study_uid,
            "series_uid": series.series_uid,
        }
        if series.modality == target_modality and unlabelled(label):
            row["split"] = UNLABELLED
        rows.append(row)
    return rows


def _patient(series) -> str:
    return series.patient_id or series.study_uid


def check_selection(selected, settings: TrainSettings) -> None:
    """Refuse a selection the worker would refuse, with the reason (before any process starts)."""
    target = settings.target_modality
    modalities = [s.modality for s, _ in selected]
    if target not in modalities:
        raise DuiitError(f"tick at least one {target} series (the target modality)")
    if settings.method != "target-only" and settings.source_modality not in modalities:
        raise DuiitError(f"tick at least one {settings.source_modality} series (the source modality), "
                         "or choose the target-only method")
    other = sorted({m for m in modalities if m not in (target, settings.source_modality)})
    if other:
        raise DuiitError(f"the selection has {', '.join(other)} series; only {target} and "
                         f"{settings.source_modality} are used")
    no_label = [s for s, label in selected if s.modality == target and unlabelled(label)]
    labelled = [(s, label) for s, label in selected if not (s.modality == target and unlabelled(label))]
    if no_label and settings.method not in TRANSLATING_METHODS:
        raise DuiitError(f"{len(no_label)} {target} series have no label; {target} series without a label train "
                         f"the translator only ({' and '.join(TRANSLATING_METHODS)}), not {settings.method}")
    if not any(s.modality == target for s, _ in labelled):
        raise DuiitError(f"give at least one {target} series a label (the others can stay unlabelled)")
    mixed = sorted({_patient(s) for s in no_label} & {_patient(s) for s, _ in labelled})
    if mixed:
        raise DuiitError(f"patient {mixed[0]} has labelled and unlabelled series; a patient without labels trains "
                         "the translator only, so label all of its series or none")
    problems = check_labels([label for _, label in labelled], settings.task)
    if problems:
        raise DuiitError("; ".join(problems))


def write_manifest(selected, settings: TrainSettings) -> Path:
    """Stage the ticked series and write the manifest CSV into the output folder; returns its path."""
    settings.check()
    check_selection(selected, settings)
    from duiit.manifest import write_manifest as write_csv
    settings.folder.mkdir(parents=True, exist_ok=True)
    rows = manifest_rows(selected, settings.series_folder, settings.target_modality)
    write_csv(rows, settings.manifest)
    return settings.manifest


def train_arguments(settings: TrainSettings, resume: bool = False) -> list:
    """The `duiit train` arguments for these settings (the worker adds --progress-json)."""
    guide_classes = guide_class_names(settings.guide_classes)
    args = [
        "--manifest", str(settings.manifest),
        "--source", settings.source_modality,
        "--target", settings.target_modality,
        "--task", settings.task,
        "--method", settings.method,
        "-o", str(settings.model),
        "--iterations", str(int(settings.iterations)),
        "--image-size", str(int(settings.image_size)),
        "--preset", settings.preset,
        "--head-depth", str(int(settings.head_depth)),
        *(["--depth-from-input"] if settings.depth_from_input else []),
        *([] if settings.mr_standard else ["--no-mr-standard"]),
        *(["--predictor-augment"] if settings.predictor_augment else []),
        "--guide-predictor", settings.guide_predictor,
        *(["--guide-classes", ",".join(guide_classes)] if guide_classes else []),
        *(["--guide-pretrain", str(int(settings.guide_pretrain))] if int(settings.guide_pretrain) else []),
        *(["--guide-inverted-lesions"] if settings.guide_inverted_lesions else []),
        *(["--guide-erased-lesions"] if settings.guide_erased_lesions else []),
        *(["--predictor-erased-lesions"] if settings.predictor_erased_lesions else []),
        "--device", settings.device or "auto",
        "--report", str(settings.report),
        *[str(a) for a in settings.extra_args],
    ]
    if resume:
        args.append("--resume")
    return args


def can_resume(settings: TrainSettings) -> bool:
    return settings.checkpoint.exists() and settings.manifest.exists()


def export_arguments(settings: TrainSettings, bundle=None) -> list:
    """`duiit export` arguments: translate the cohort's source series with the trained bundle."""
    return [str(bundle or settings.model), "--manifest", str(settings.manifest), "-o", str(settings.cohort)]


def report_page(report) -> Path | None:
    """The HTML page of a report (a .html file, or a folder holding index.html / report.html)."""
    if not report:
        return None
    path = Path(report)
    if path.is_file():
        return path
    for name in ("index.html", "report.html"):
        if (path / name).is_file():
            return path / name
    pages = sorted(path.glob("*.html")) if path.is_dir() else []
    return pages[0] if pages else None


VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def exported_volumes(cohort_folder, limit: int = 3) -> list:
    """A few translated volumes of an exported cohort (from its manifest when there is one)."""
    folder = Path(cohort_folder)
    found = []
    manifest = folder / "labels.csv"  # written by `duiit export`
    if manifest.is_file():
        import csv
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            for row in csv.DictReader(handle):
                path = Path(row.get("path", ""))
                path = path if path.is_absolute() else folder / path
                if path.exists():
                    found.append(path)
    if not found and folder.is_dir():
        found = sorted(p for p in folder.rglob("*") if p.is_file() and str(p).lower().endswith(VOLUME_SUFFIXES))
    return found[:limit]
