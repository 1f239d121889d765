"""Datasets and splits: manifest cases -> labelled axial slices, split by patient (never by slice)."""

import zlib
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from .dicom_series import find_series
from .errors import DuiitError
from .manifest import UNLABELLED, Case
from .normalisation import apply_normalisation, bend_standard, fit_normalisation, learn_standard, standardise_record
from .slices import in_plane_spacing, informative, to_axial, volume_to_slices
from .volume_io import read_volume

# With a lesion mask, slices without lesion get this label (slice-level classification).
BACKGROUND_LABEL = "none"
VALIDATION_FRACTION = 0.2


@dataclass
class SliceSet:
    """Slices (stored as float16 to halve memory) with one label per slice and the case each came from;
    `lesions`: each slice's lesion mask (bool, the images' shape), None when no case of the set has one."""
    images: torch.Tensor
    labels: torch.Tensor
    case_index: torch.Tensor
    cases: list = field(default_factory=list)
    lesions: torch.Tensor | None = None

    def __len__(self):
        return int(self.images.shape[0])

    @staticmethod
    def concat(parts: list["SliceSet"]) -> "SliceSet":
        cases, images, labels, index = [], [], [], []
        for part in parts:
            images.append(part.images)
            labels.append(part.labels)
            index.append(part.case_index + len(cases))
            cases.extend(part.cases)
        lesions = None
        if any(part.lesions is not None for part in parts):
            lesions = torch.cat([part.lesions if part.lesions is not None
                                 else torch.zeros(part.images.shape, dtype=torch.bool) for part in parts])
        return SliceSet(torch.cat(images), torch.cat(labels), torch.cat(index), cases, lesions)


@dataclass
class Cohort:
    task: str
    label_names: list
    target_train: SliceSet
    target_val: SliceSet
    target_test: SliceSet
    source_train: SliceSet
    regression_scale: tuple = (0.0, 1.0)   # (mean, std) of training labels, for standardised outputs
    summary: dict = field(default_factory=dict)
    target_unlabelled: SliceSet | None = None  # for the translator only; labels are placeholders
    source_standard: list | None = None  # MR histogram landmarks the source volumes were mapped to

    @property
    def has_unlabelled_target(self) -> bool:
        return self.target_unlabelled is not None and len(self.target_unlabelled) > 0

    @property
    def translator_target(self) -> SliceSet:
        """The target slices the translator learns the target modality from: labelled and unlabelled training."""
        if not self.has_unlabelled_target:
            return self.target_train
        return SliceSet.concat([self.target_train, self.target_unlabelled])


def label_names_for(cases: list[Case], task: str, classes=None) -> list:
    if task != "classification":
        return []
    found = {c.label for c in cases}
    if any(c.mask for c in cases):
        found.add(BACKGROUND_LABEL)
    names = list(classes) if classes else sorted(found)
    for case in cases:
        if case.label not in names:
            raise DuiitError(f"case {case.name}: label {case.label!r} is not one of the classes {', '.join(names)}")
    empty = [n for n in names if n not in found]
    if empty:
        raise DuiitError(f"class {empty[0]!r} has no cases in the manifest")
    if len(names) < 2:
        raise DuiitError(f"classification needs at least 2 classes; the manifest only has {names[0]!r}")
    return names


def check_regression_labels(cases: list[Case]) -> None:
    for case in cases:
        try:
            float(case.label.rstrip("YyMmWwDd"))
        except ValueError:
            raise DuiitError(f"case {case.name}: label {case.label!r} is not a number (task is regression)") from None


def regression_value(label: str) -> float:
    """Numbers, and DICOM ages such as '045Y' (years), '006M' (months)."""
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if label and label[-1].upper() in units:
        return float(label[:-1]) * units[label[-1].upper()]
    return float(label)


def read_case(case: Case, standard=None):
    """(image, its LPS-ordered array, in-plane spacing, normalisation record) of one case; an MR case's
    histogram is mapped to `standard`."""
    tags = None
    if case.path.is_dir():
        tags = find_series(case.path, case.series_uid).tags
        dicom_modality = tags.get("Modality", "")
        if dicom_modality and dicom_modality != case.modality:
            raise DuiitError(f"case {case.name}: the manifest says {case.modality} but the DICOM Modality tag is "
                             f"{dicom_modality}")
    image = read_volume(case.path, case.series_uid)
    axial = to_axial(image)
    array = sitk.GetArrayFromImage(axial)
    record = standardise_record(fit_normalisation(array, case.modality, tags), standard)
    return image, array, in_plane_spacing(axial), record


def load_case(case: Case, image_size: int, task: str, label_names: list, standard=None):
    """(slices, labels, lesion masks or None, normalisation record) for the informative slices of one case (an
    unlabelled case's labels are placeholders: -1, or NaN for regression); an MR case's histogram is mapped to
    `standard`. The masks are the case's lesion mask on the slices' grid, where it has one."""
    image, array, spacing, record = read_case(case, standard)
    slices = volume_to_slices(apply_normalisation(array, record), image_size, spacing)
    keep = informative(slices)
    lesions = None
    if case.mask is not None:
        lesion = axial_mask(case, image)
        lesions = volume_to_slices(lesion.astype(np.float32), image_size, spacing)[keep] > 0.5
    if not case.labelled:
        labels = torch.full((slices.shape[0],), float("nan") if task == "regression" else -1,
                            dtype=torch.float32 if task == "regression" else torch.long)
    elif task == "regression":
        labels = torch.full((slices.shape[0],), regression_value(case.label), dtype=torch.float32)
    else:
        labels = torch.full((slices.shape[0],), label_names.index(case.label), dtype=torch.long)
        if case.mask is not None:
            present = torch.from_numpy(lesion.reshape(len(labels), -1).any(axis=1))
            labels[~present] = label_names.index(BACKGROUND_LABEL)
    record["slices"] = int(keep.sum())
    return slices[keep].to(torch.float16), labels[keep], lesions, record


def learn_source_standard(cases: list[Case]) -> list | None:
    """The histogram standard of these (training, source) cases: normalisation.learn_standard over their
    records. A pass of its own before the slices are made: each volume's map needs the standard, and the
    standard needs every volume, and holding the volumes meanwhile would cost more than reading them twice."""
    records = []
    for case in cases:
        axial = to_axial(read_volume(case.path, case.series_uid))
        records.append(fit_normalisation(sitk.GetArrayViewFromImage(axial), case.modality))
    return learn_standard(records)


def axial_mask(case: Case, image: sitk.Image) -> np.ndarray:
    """The case's lesion mask (voxels > 0) as a boolean array in the LPS order of `to_axial(image)`."""
    mask = read_volume(case.mask)
    if mask.GetSize() != image.GetSize():
        raise DuiitError(f"case {case.name}: mask {case.mask} has size {mask.GetSize()} but the image has "
                         f"{image.GetSize()}")
    mask.CopyInformation(image)  # masks from other tools often carry slightly different float geometry
    return sitk.GetArrayFromImage(to_axial(mask)) > 0


def assign_splits(cases: list[Case], target: str, seed: int, stratify: bool = True) -> dict:
    """patient_id -> split. Manifest splits win; other target patients go 20% to val, per class when
    `stratify` (classification), so that every class is validated. A patient is in one split only, so that
    no image of a validation or test patient reaches training (not even unlabelled)."""
    splits = {}
    for case in cases:
        if case.split and splits.setdefault(case.patient_id, case.split) != case.split:
            raise DuiitError(f"patient {case.patient_id} is in two splits ({splits[case.patient_id]} and "
                             f"{case.split}, {case.path.name}); a patient's cases must share one split")
    for case in cases:
        if case.labelled and splits.get(case.patient_id) == UNLABELLED:
            raise DuiitError(f"patient {case.patient_id} has unlabelled cases and a labelled one ({case.path.name}); "
                             f"an unlabelled patient trains the translator only: give all its cases the split "
                             f"{UNLABELLED!r}, or none")
    rng = np.random.default_rng(seed)
    by_label = {}
    for case in cases:
        if case.modality == target and case.patient_id not in splits:
            by_label.setdefault(case.label if stratify else "", set()).add(case.patient_id)
    for label in sorted(by_label):
        patients = sorted(by_label[label] - set(splits))
        rng.shuffle(patients)
        n_val = int(round(len(patients) * VALIDATION_FRACTION))
        if n_val == 0 and len(patients) >= 2:
            n_val = 1
        for n, patient in enumerate(patients):
            splits[patient] = "val" if n < n_val else "train"
    return splits


def build_cohort(cases: list[Case], source: str, target: str, task: str, image_size: int, seed: int,
                 classes=None, progress=None, mr_standard: bool = True,
                 mr_contrast_jitter: float = 0.0, contrast_seed: int | None = None) -> Cohort:
    """`mr_standard`: map each MR source volume's histogram onto the training MR volumes' standard
    (normalisation.learn_standard); `mr_contrast_jitter` > 0: onto that standard bent by a gamma of its own
    (contrast_gamma), so that the standard aligns the volumes without making them all alike. `contrast_seed`
    draws the gammas (default: `seed`, which also splits the patients), so a benchmark can keep one split and
    draw new gammas for each training seed."""
    if not 0.0 <= mr_contrast_jitter < 1.0:
        raise DuiitError(f"the MR contrast jitter must be in [0, 1), not {mr_contrast_jitter}")
    if mr_contrast_jitter and not (source == "MR" and mr_standard):
        raise DuiitError("the MR contrast jitter bends the MR standard, which this training does not use "
                         f"({'the MR standard is off' if source == 'MR' else f'the source is {source}'})")
    cases = [c for c in cases if c.modality in (source, target)]
    for case in cases:
        if not case.labelled and case.modality != target:
            raise DuiitError(f"case {case.name}: the split {UNLABELLED!r} is for {target} cases (they train the "
                             f"translator only); a {case.modality} case needs a label")
    labelled = [c for c in cases if c.labelled]
    if not any(c.modality == target for c in labelled):
        raise DuiitError(f"the manifest has no labelled {target} cases")
    if task == "regression":
        check_regression_labels(labelled)
    label_names = label_names_for(labelled, task, classes)
    splits = assign_splits(cases, target, seed, stratify=task == "classification")
    parts = {"target_train": [], "target_val": [], "target_test": [], "source_train": [], "target_unlabelled": []}
    records = []
    # predictors are evaluated on real target images only
    cases = [c for c in cases if c.modality == target or (splits.get(c.patient_id) or "train") == "train"]
    standard = None
    if source == "MR" and mr_standard:
        standard = learn_source_standard([c for c in cases if c.modality == source])
    for n, case in enumerate(cases):
        if progress:
            progress(n, len(cases), case)
        split = splits.get(case.patient_id, "train") or "train"
        case_standard, gamma = standard if case.modality == source else None, None
        if case_standard and mr_contrast_jitter:
            gamma = contrast_gamma(case, seed if contrast_seed is None else contrast_seed, mr_contrast_jitter)
            case_standard = bend_standard(case_standard, gamma)
        slices, labels, lesions, record = load_case(case, image_size, task, label_names, case_standard)
        if gamma is not None:
            record["contrast_gamma"] = gamma
        key = f"{'target' if case.modality == target else 'source'}_{split}"
        parts[key].append(SliceSet(slices, labels, torch.zeros(len(labels), dtype=torch.long), [case], lesions))
        records.append({"patient_id": case.patient_id, "path": str(case.path), "modality": case.modality,
                        "split": split, "label": case.label, "normalisation": record})
    sets = {k: _concat_or_empty(v, image_size, task) for k, v in parts.items()}
    if len(sets["target_train"]) == 0:
        raise DuiitError(f"no {target} training cases after the split")
    scale = (0.0, 1.0)
    if task == "regression":
        values = torch.cat([sets["target_train"].labels, sets["source_train"].labels])
        scale = (float(values.mean()), float(values.std()) if len(values) > 1 and values.std() > 0 else 1.0)
    summary = {"cases": records, "counts": {k: {"cases": len(v.cases), "slices": len(v)} for k, v in sets.items()},
               "patients": {k: sorted({c.patient_id for c in v.cases}) for k, v in sets.items()}}
    return Cohort(task, label_names, sets["target_train"], sets["target_val"], sets["target_test"],
                  sets["source_train"], scale, summary, sets["target_unlabelled"], standard)


def contrast_gamma(case: Case, seed: int, jitter: float) -> float:
    """One gamma per source volume and seed, uniform in [1 - jitter, 1 + jitter]: the same in every run with
    that seed, whatever the manifest's order or where the cohort's folder is."""
    key = f"{case.patient_id}|{case.path.name}|{case.series_uid or ''}"
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return float(rng.uniform(1.0 - jitter, 1.0 + jitter))


def _concat_or_empty(parts, image_size, task) -> SliceSet:
    if parts:
        return SliceSet.concat(parts)
    dtype = torch.float32 if task == "regression" else torch.long
    return SliceSet(torch.zeros((0, 1, image_size, image_size), dtype=torch.float16), torch.zeros(0, dtype=dtype),
                    torch.zeros(0, dtype=torch.long), [])
