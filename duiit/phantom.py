"""Synthetic head phantoms (CT in HU, T1-like MR, PET-like uptake) for tests and the quick demo.

Each phantom has a skull, brain, ventricles and optionally a lesion that is hyperdense in CT,
bright in T1 MR and hot in PET; the lesion mask gives slice-level labels.
"""

from pathlib import Path

import numpy as np
import SimpleITK as sitk

# tissue -> (CT HU, T1 MR intensity, PET SUV)
TISSUES = {"air": (-1000, 0, 0.0), "scalp": (40, 700, 1.0), "skull": (1000, 150, 0.5),
           "brain": (35, 450, 6.0), "csf": (5, 120, 1.0), "lesion": (80, 750, 14.0)}
MODALITY_COLUMN = {"CT": 0, "MR": 1, "PT": 2}


def _ellipsoid(grid, centre, radii):
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def head_phantom(shape=(24, 48, 48), modality="CT", lesion=False, seed=0, spacing=(1.0, 1.0, 2.0)):
    """(image, lesion mask) as SimpleITK images; shape is (z, y, x), spacing is (x, y, z)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    grid = (z, y, x)
    scale = rng.uniform(0.85, 1.0)
    column = MODALITY_COLUMN[modality]
    value = lambda tissue: TISSUES[tissue][column]  # noqa: E731
    array = np.full(shape, value("air"), dtype=np.float32)
    centre = (0.0, rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    array[_ellipsoid(grid, centre, (0.95, 0.85 * scale, 0.75 * scale))] = value("scalp")
    array[_ellipsoid(grid, centre, (0.9, 0.8 * scale, 0.7 * scale))] = value("skull")
    array[_ellipsoid(grid, centre, (0.82, 0.7 * scale, 0.6 * scale))] = value("brain")
    for side in (-1, 1):
        array[_ellipsoid(grid, (0.0, centre[1] - 0.05, centre[2] + side * 0.12), (0.3, 0.25, 0.07))] = value("csf")
    mask = np.zeros(shape, dtype=np.uint8)
    if lesion:
        lesion_centre = (rng.uniform(-0.4, 0.4), rng.uniform(-0.35, 0.35) * scale, rng.uniform(-0.3, 0.3) * scale)
        radius = rng.uniform(0.15, 0.25)
        inside = _ellipsoid(grid, lesion_centre, (radius * 1.5, radius, radius))
        array[inside] = value("lesion")
        mask[inside] = 1
    noise = {"CT": 15.0, "MR": 25.0, "PT": 0.4}[modality]
    array += rng.normal(0, noise, shape).astype(np.float32)
    if modality == "MR":  # smooth bias field, as real MR has
        array *= (1.0 + 0.15 * y + 0.1 * x).astype(np.float32)
    if modality == "PT":
        array = np.clip(array, 0, None)
    image, mask_image = sitk.GetImageFromArray(array), sitk.GetImageFromArray(mask)
    for im in (image, mask_image):
        im.SetSpacing(spacing)
        im.SetOrigin((-shape[2] * spacing[0] / 2, -shape[1] * spacing[1] / 2, -shape[0] * spacing[2] / 2))
    return image, mask_image


def write_phantom_cohort(folder, n_ct=6, n_source=6, source="MR", shape=(24, 48, 48), seed=0,
                         task="classification", slice_labels=True, n_ct_unlabelled=0) -> Path:
    """Write phantoms (half with lesions) and a manifest; returns the manifest path. n_ct_unlabelled more CT
    phantoms get the split "unlabelled" and no label."""
    from .manifest import UNLABELLED, write_manifest
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    kinds = (("CT", n_ct, "", 0), (source, n_source, "", 500), ("CT", n_ct_unlabelled, "U", 800))
    for modality, count, unlabelled, seed_offset in kinds:
        for n in range(count):
            lesion = n % 2 == 1
            image, mask = head_phantom(shape, modality, lesion, seed * 1000 + n + seed_offset)
            name = f"{modality.lower()}_{unlabelled.lower()}{n:02d}"
            sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
            row = {"path": f"{name}.nii.gz", "modality": modality, "patient_id": f"{modality}{unlabelled}{n:02d}"}
            if unlabelled:
                row.update(label="", split=UNLABELLED)
            elif task == "regression":
                row["label"] = f"{40 + 5 * n + (10 if lesion else 0)}"
            else:
                row["label"] = "lesion" if lesion else "none"
                if slice_labels:
                    sitk.WriteImage(mask, str(folder / f"{name}_mask.nii.gz"))
                    row["mask"] = f"{name}_mask.nii.gz"
            rows.append(row)
    path = folder / "manifest.csv"
    write_manifest(rows, path)
    return path
