"""Volumes <-> batches of axial slices at the network size, and back to the volume's own grid.

A volume is first put in LPS order (a pure axis permutation/flip, so exactly invertible) so that
its k axis is axial whatever its direction; slices are resized to the network size with bilinear
interpolation (antialiased when shrinking) and resized back afterwards. A slice whose field of view is
not square in mm is fitted into the network's square keeping its shape (`SquareFit`), so a head looks the
same to the networks whatever the acquisition's matrix and pixel spacing.

Two ways to get the LPS order: `to_axial`/`from_axial` make reoriented copies (SimpleITK's
DICOMOrient), which is simple and fine for small volumes and for training; `AxialLayout` gives the
same permutation/flip as numpy *views* of the input's own array, and the matching region of the
input's grid for any run of axial slices, so translation reads the input in place and writes each
batch straight into one preallocated output image on the input's grid (no whole-volume copies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

AXIAL_ORIENTATION = "LPS"
# A slice takes part in training and in volume-level aggregation when at least this fraction of it
# is foreground (above -0.8 in network range), so empty slices above and below the body do not vote.
FOREGROUND_LEVEL = -0.8
MIN_FOREGROUND_FRACTION = 0.05

# network units of the padding around a slice whose field of view is not square: air / no signal
BACKGROUND_UNIT = -1.0

# orientation letter -> (LPS axis it lies along, True when it points the negative way)
_LETTERS = {"L": (0, False), "R": (0, True), "P": (1, False), "A": (1, True), "S": (2, False), "I": (2, True)}


def to_axial(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(image, AXIAL_ORIENTATION)


def from_axial(axial: sitk.Image, original: sitk.Image) -> sitk.Image:
    """Undo `to_axial`, then take the original's geometry verbatim (no float drift in direction)."""
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original.GetDirection())
    back = sitk.DICOMOrient(axial, orientation)
    back.CopyInformation(original)
    return back


@dataclass(frozen=True)
class AxialLayout:
    """How an image's (z, y, x) array maps to the LPS-ordered array that `to_axial` would give.

    source_axis[t]: the image axis (0=i, 1=j, 2=k) that runs along LPS axis t; flipped[t]: whether it
    runs the opposite way. The same permutation and flips as DICOMOrient(image, "LPS"), as views.
    """
    size: tuple          # the image's size (i, j, k)
    source_axis: tuple   # per LPS axis t
    flipped: tuple       # per LPS axis t
    spacing: tuple = (1.0, 1.0, 1.0)  # mm per LPS axis t

    @classmethod
    def of(cls, image: sitk.Image) -> "AxialLayout":
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        source_axis, flipped = [0, 0, 0], [False, False, False]
        for axis, letter in enumerate(code):
            target, negative = _LETTERS[letter]
            source_axis[target], flipped[target] = axis, negative
        spacing = tuple(float(image.GetSpacing()[axis]) for axis in source_axis)
        return cls(tuple(image.GetSize()), tuple(source_axis), tuple(flipped), spacing)

    @property
    def identity(self) -> bool:
        return self.source_axis == (0, 1, 2) and not any(self.flipped)

    @property
    def in_plane_spacing(self) -> tuple:
        """(row, column) mm of the axial slices."""
        return self.spacing[1], self.spacing[0]

    @property
    def shape(self) -> tuple:
        """(slices, rows, columns) of the axial array."""
        return tuple(self.size[self.source_axis[t]] for t in (2, 1, 0))

    def view(self, array: np.ndarray) -> np.ndarray:
        """An image's (z, y, x) array (or a block of it, see `region`) as an axial (S, P, L) view, no copy."""
        # numpy axis of image axis a is 2 - a; numpy axis d of the view is LPS axis 2 - d
        view = np.transpose(array, [2 - self.source_axis[2 - d] for d in range(3)])
        for t in range(3):
            if self.flipped[t]:
                view = np.flip(view, axis=2 - t)
        return view

    def region(self, start: int, stop: int):
        """(index, size) on the image's own grid of axial slices [start, stop), for Paste/RegionOfInterest."""
        axis, depth = self.source_axis[2], self.size[self.source_axis[2]]
        first = depth - stop if self.flipped[2] else start
        index, size = [0, 0, 0], list(self.size)
        index[axis], size[axis] = first, stop - start
        return index, size

    def slice_index(self, n: int) -> int:
        """Axial slice number (inferior to superior) -> the image's k index when its k axis is axial."""
        if self.source_axis[2] != 2:
            return n
        return self.size[2] - 1 - n if self.flipped[2] else n

    def subsample(self, array: np.ndarray, limit: int = 2_000_000) -> np.ndarray:
        """Exactly the voxels `normalisation._subsample` takes from the axial array, without making it."""
        view = self.view(array)
        if self.identity:
            flat = array.reshape(-1)
            return flat[:: max(1, flat.size // limit)]
        n, step = view.size, max(1, view.size // limit)
        parts, block = [], step * 2 ** 18  # gathered 256k voxels at a time: small index arrays
        for first in range(0, n, block):
            parts.append(view[np.unravel_index(np.arange(first, min(n, first + block), step), view.shape)])
        return np.concatenate(parts)


def resize(slices: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, *size)."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    shrinking = size[0] < slices.shape[-2] or size[1] < slices.shape[-1]
    return F.interpolate(slices, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)


def in_plane_spacing(axial: sitk.Image) -> tuple:
    """(row, column) mm of an LPS-ordered image's slices."""
    return float(axial.GetSpacing()[1]), float(axial.GetSpacing()[0])


@dataclass(frozen=True)
class SquareFit:
    """Where a (rows, columns) slice of (row, column) mm pixels lies in the network's size x size square:
    scaled so that its longer side in mm spans the square and its pixels are square in mm, centred, the
    rest BACKGROUND_UNIT. A square field of view fills the square (a plain resize)."""
    shape: tuple   # the slice's (rows, columns)
    size: int      # the network's square
    fitted: tuple  # (rows, columns) the slice takes inside the square
    corner: tuple  # (top, left) of it

    @classmethod
    def of(cls, shape, spacing, size: int) -> "SquareFit":
        extent = (shape[0] * spacing[0], shape[1] * spacing[1])
        longest = max(extent)
        fitted = tuple(max(1, min(size, round(size * e / longest))) if longest > 0 else size for e in extent)
        return cls(tuple(shape), size, fitted, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))

    def to_network(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, 1, rows, columns) -> (N, 1, size, size)."""
        inner = resize(slices, self.fitted)
        if self.fitted == (self.size, self.size):
            return inner
        (top, left), (rows, columns) = self.corner, self.fitted
        return F.pad(inner, (left, self.size - columns - left, top, self.size - rows - top), value=BACKGROUND_UNIT)

    def from_network(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, 1, size, size) -> (N, 1, rows, columns): the slice's part of the square, resized back."""
        (top, left), (rows, columns) = self.corner, self.fitted
        return resize(slices[..., top:top + rows, left:left + columns], self.shape)


def volume_to_slices(array: np.ndarray, image_size: int, spacing: tuple) -> torch.Tensor:
    """(Z, Y, X) float32 with (Y, X) mm pixels -> (Z, 1, S, S), see SquareFit."""
    fit = SquareFit.of(array.shape[1:], spacing, image_size)
    return fit.to_network(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None])


def foreground_fraction(slices: torch.Tensor) -> torch.Tensor:
    return (slices > FOREGROUND_LEVEL).float().mean(dim=(1, 2, 3))


def informative(slices: torch.Tensor) -> torch.Tensor:
    """Boolean mask of slices that take part in training and aggregation (at least one per volume)."""
    fractions = foreground_fraction(slices)
    keep = fractions >= MIN_FOREGROUND_FRACTION
    if not keep.any():
        keep[int(fractions.argmax())] = True
    return keep
