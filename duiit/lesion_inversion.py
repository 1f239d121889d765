"""Real target lesions drawn with the opposite sign, as negatives for DUIIT's target guide.

A guide that learnt "lesion" from a few CT slices also calls a dark blob a lesion (benchmark analysis 25:
CT lesions mirrored dark still scored 0.72-0.77 AUC), so it lets G keep an MR lesion's dark sign. Shown each
training lesion mirrored about the tissue around it and labelled background, the guide can only be satisfied
by a lesion with the target's own sign, and that is what its push on G then asks for.
"""

import numpy as np
import SimpleITK as sitk
import torch

from .cohort import BACKGROUND_LABEL, SliceSet, axial_mask, read_case
from .errors import DuiitError
from .normalisation import apply_normalisation
from .slices import FOREGROUND_LEVEL, volume_to_slices

# The ring whose median a lesion is mirrored about: in-plane voxels 1-3 from the lesion (as the benchmark's
# lesion erasure), inside the body. The median, not the mean: a lesion by the skull has bone in its ring, and
# the mean of it (up to 300 HU on the test phantoms) would mirror the lesion brighter, not darker.
RING_INNER, RING_OUTER = 1, 3


def ring(mask: np.ndarray, inner: int = RING_INNER, outer: int = RING_OUTER) -> np.ndarray:
    """In-plane ring `inner`..`outer` voxels around a (z, y, x) boolean mask, slice by slice."""
    def dilate(m, radius):
        image = sitk.GetImageFromArray(m.astype(np.uint8))
        return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [radius, radius, 0])) > 0

    return dilate(mask, outer) & ~dilate(mask, inner)


def invert_lesions(array: np.ndarray, lesion: np.ndarray, around: np.ndarray) -> np.ndarray:
    """A copy of the (z, y, x) volume with each slice's lesion voxels mirrored about the median of that slice's
    `around` voxels (of its lesion's own voxels where it has none)."""
    inverted = array.astype(np.float32, copy=True)
    for z in np.flatnonzero(lesion.reshape(len(array), -1).any(axis=1)):
        inside = lesion[z]
        level = float(np.median(inverted[z][around[z]] if around[z].any() else inverted[z][inside]))
        inverted[z][inside] = 2.0 * level - inverted[z][inside]
    return inverted


def inverted_lesion_slices(cases: list, image_size: int, label_names: list) -> SliceSet:
    """The lesion slices of the masked cases among `cases`, each lesion drawn with the opposite sign,
    labelled background, in network units as the cohort loads slices."""
    if BACKGROUND_LABEL not in label_names:
        raise DuiitError(f"inverted lesions are labelled {BACKGROUND_LABEL!r}, which is not a class of this "
                         f"cohort ({', '.join(label_names)}): give the target cases lesion masks")
    parts = []
    for number, case in enumerate(cases):
        if case.mask is None:
            continue
        image, array, spacing, record = read_case(case)
        lesion = axial_mask(case, image)
        present = lesion.reshape(len(lesion), -1).any(axis=1)
        if not present.any():
            continue
        body = apply_normalisation(array, record) > FOREGROUND_LEVEL
        inverted = invert_lesions(array, lesion, ring(lesion) & body)[present]
        slices = volume_to_slices(apply_normalisation(inverted, record), image_size, spacing)
        n = len(slices)
        parts.append(SliceSet(slices.to(torch.float16), torch.full((n,), label_names.index(BACKGROUND_LABEL)),
                              torch.full((n,), number), []))
    if not parts:
        names = ", ".join(c.name for c in cases[:3]) + (" ..." if len(cases) > 3 else "")
        raise DuiitError(f"inverted lesions need target training cases with lesion masks that mark a lesion; "
                         f"none of {len(cases)} ({names}) has one")
    images = torch.cat([p.images for p in parts])
    return SliceSet(images, torch.cat([p.labels for p in parts]), torch.cat([p.case_index for p in parts]),
                    list(cases))
