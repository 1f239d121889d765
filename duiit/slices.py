"""Volumes <-> batches of axial slices at the network size, and back to the volume's own grid.

A volume is first put in LPS order (a pure axis permutation/flip, so exactly invertible) so that
its k axis is axial whatever its direction; slices are resized to the network size with bilinear
interpolation (antialiased when shrinking) and resized back afterwards.
"""

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

AXIAL_ORIENTATION = "LPS"
# A slice takes part in training and in volume-level aggregation when at least this fraction of it
# is foreground (above -0.8 in network range), so empty slices above and below the body do not vote.
FOREGROUND_LEVEL = -0.8
MIN_FOREGROUND_FRACTION = 0.05


def to_axial(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(image, AXIAL_ORIENTATION)


def from_axial(axial: sitk.Image, original: sitk.Image) -> sitk.Image:
    """Undo `to_axial`, then take the original's geometry verbatim (no float drift in direction)."""
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original.GetDirection())
    back = sitk.DICOMOrient(axial, orientation)
    back.CopyInformation(original)
    return back


def resize(slices: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, *size)."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    shrinking = size[0] < slices.shape[-2] or size[1] < slices.shape[-1]
    return F.interpolate(slices, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)


def volume_to_slices(array: np.ndarray, image_size: int) -> torch.Tensor:
    """(Z, Y, X) float32 -> (Z, 1, S, S)."""
    return resize(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None], (image_size, image_size))


def foreground_fraction(slices: torch.Tensor) -> torch.Tensor:
    return (slices > FOREGROUND_LEVEL).float().mean(dim=(1, 2, 3))


def informative(slices: torch.Tensor) -> torch.Tensor:
    """Boolean mask of slices that take part in training and aggregation (at least one per volume)."""
    fractions = foreground_fraction(slices)
    keep = fractions >= MIN_FOREGROUND_FRACTION
    if not keep.any():
        keep[int(fractions.argmax())] = True
    return keep
