"""Labelled head MR -> CT cohorts built from the real sample volumes (issue 4), for the demo and benchmark.

Only a few real head volumes are reachable from the package registries (see :mod:`duiit.sample_data`):
ONE real CT (InVesalius Cranium) and three real single-subject T1 MRs (Colin27; pyradiomics brain1 and
brain2, which carry real enhancing tumours); two averaged full-head T1s (MNI152, pydeface's mean head) can
be added (``mr_volumes``). Every "patient" here is therefore a random augmentation of one of those
real volumes, and ``cohort.json`` says so. What is and what is not real:

* Anatomy and intensities: real, resampled onto a common head frame (axial slices in LPS order, in-plane
  field of view 256 mm centred on the head, slices from just above the vertex downward). The NIfTI
  spacing is the true physical spacing of that grid.
* Augmentation (per patient, from a numpy Generator seeded by ``seed``): rotation about z (+-10 deg),
  isotropic scaling 0.9-1.1, left-right flip, in-plane shift (+-5 mm), intensity jitter (CT: +-5 HU,
  +-1 % gain, added noise; MR: gain, gamma, smooth bias field, Rician noise).
* Lesions: SIMULATED haemorrhage-like blobs, smooth ellipsoids of radius 4-12 mm placed inside the brain
  mask, away from the skull. CT: hyperdense, 65-85 HU absolute (brain here is ~15-35 HU). T1 MR:
  hyperintense and heterogeneous, +30-60 % of the local brain intensity (like subacute blood).
  The real tumours of brain1/brain2 are kept and count as lesions too (mask value 2).
* Labels: volume label "lesion"/"none"; per axial slice, lesion present iff the slice of the lesion
  mask (column ``mask``) has a voxel > 0. Mask values: 1 simulated lesion, 2 real tumour.
* Paired check set (``check_manifest.csv``): the MR there is SIMULATED from held-out augmentations of
  the real CT by a documented T1-like mapping of HU per tissue (:func:`simulate_t1_from_ct`), so that
  translated-vs-real CT MAE/PSNR/SSIM can be measured. With one real CT, "held-out" means volumes not
  used for training, but the same person's anatomy as the training CT: fidelity there is optimistic.
* ``mr_volumes=[SIMULATED_T1]`` (a control, not real MR): the MR patients are T1s simulated the same way from
  other augmentations of the real CT, so the paired check represents the translators' source domain; their
  lesions are the CT lesions (65-85 HU) seen through the mapping, darker than the brain around them.
* ``n_ct_unlabelled``: more CT augmentations with the split "unlabelled" and no label or mask in the
  manifest (their lesions are in ``cohort.json``): a hospital's unlabelled CTs, for the translator only.

``build_cohort(out_dir, ...)`` writes NIfTI volumes, lesion masks, head masks, ``manifest.csv``
(path,modality,label,patient_id,split,mask,head_mask,source_volume), ``check_manifest.csv`` and
``cohort.json``. The "tiny" size preset (64x64 in-plane, <= 20 slices) is quick enough for tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .errors import DuiitError
from .manifest import UNLABELLED, write_manifest

FOV_MM = 256.0
# name -> (in-plane pixels, slice spacing mm, most slices per volume)
PRESETS = {
    "tiny": (64, 8.0, 20),
    "small": (128, 4.0, 38),
    "full": (256, 2.0, 76),
}
TOP_MARGIN_MM = 4.0           # air kept above the vertex
CT_AIR_HU = -1000.0
CT_HEAD_HU = -500.0           # head mask threshold
CT_BONE_HU = 300.0
LESION_RADIUS_MM = (4.0, 12.0)
CT_LESION_HU = (65.0, 85.0)   # acute-haemorrhage-like, absolute HU
MR_LESION_GAIN = (0.30, 0.60)  # over the local brain intensity
LESION_EDGE_MM = 1.0          # width of the smooth edge of a lesion
LESION_Z_RANGE = (0.35, 0.92)  # lesions are centred in this fraction of the head's height (supratentorial)
SKULL_CLEARANCE_MM = 6.0      # lesion surface to brain-mask edge
WORK_MM = 2.0                 # grid on which the real volumes' masks are computed
SIMULATED_MR_NOTE = "MR SIMULATED from real CT (T1-like mapping of HU per tissue); not a real MR"


# ----------------------------------------------------------------------------------------------
# real volumes in a common orientation, with their masks


@dataclass
class RealVolume:
    """One real volume in LPS order with its head and brain masks and where its head is."""
    name: str
    modality: str               # "CT" | "MR"
    image: sitk.Image           # float32, LPS
    head: sitk.Image            # uint8
    brain: sitk.Image           # uint8
    tumour: sitk.Image | None   # uint8, real lesion (pyradiomics) or None
    centre_xy: tuple            # head centroid, physical mm
    z_top: float                # top anchor (vertex + margin, or the data's top), physical mm
    z_bottom: float             # lowest slice centre, physical mm
    background: float
    note: str = ""
    smoothed: dict = field(default_factory=dict)  # preset -> antialiased image

    @property
    def coverage_mm(self) -> float:
        return self.z_top - self.z_bottom


def _lps(image: sitk.Image, pixel=sitk.sitkFloat32) -> sitk.Image:
    return sitk.DICOMOrient(sitk.Cast(image, pixel), "LPS")


def _largest(mask: sitk.Image) -> sitk.Image:
    return sitk.Cast(sitk.RelabelComponent(sitk.ConnectedComponent(mask)) == 1, sitk.sitkUInt8)


def _fill_slices(mask: sitk.Image) -> sitk.Image:
    """Fill holes in every axial slice (sinuses, ventricles) of a 3D mask."""
    array = sitk.GetArrayFromImage(mask).astype(np.uint8)
    nz, ny, nx = array.shape
    # One 2D fill over all slices side by side, each framed by a 1-pixel background border: a region is a
    # hole iff it is not connected to its own slice's frame, i.e. exactly a 2D hole of that slice.
    tiled = np.zeros((ny + 2, nz, nx + 2), dtype=np.uint8)
    tiled[1:-1, :, 1:-1] = array.transpose(1, 0, 2)
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(tiled.reshape(ny + 2, -1))))
    array = filled.reshape(ny + 2, nz, nx + 2)[1:-1, :, 1:-1].transpose(1, 0, 2).copy()
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(mask)
    return out


def _inside_distance(mask: sitk.Image) -> sitk.Image:
    """mm from each voxel inside the mask to its edge (negative outside)."""
    return sitk.SignedMaurerDistanceMap(sitk.Cast(mask, sitk.sitkUInt8), insideIsPositive=True,
                                        squaredDistance=False, useImageSpacing=True)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _anchors(head: sitk.Image, image: sitk.Image) -> tuple:
    """(centre_xy, z_top, z_bottom) in mm: head centroid; vertex + margin if the head ends inside the data,
    else the data's top slice; the data's bottom slice. `head` may be on a coarser grid than `image`."""
    array = sitk.GetArrayViewFromImage(head)
    spacing = head.GetSpacing()
    area_cm2 = array.reshape(array.shape[0], -1).sum(1) * spacing[0] * spacing[1] / 100.0
    rows = np.nonzero(area_cm2 > 5.0)[0]
    if rows.size == 0:
        raise DuiitError("no head found in the volume")
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(head)
    centroid = stats.GetCentroid(1)
    z_data_top = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))[2]
    z_bottom = image.TransformIndexToPhysicalPoint((0, 0, 0))[2]
    top = int(rows.max())
    if top < array.shape[0] - 1 and area_cm2[-1] < 5.0:  # the vertex is inside the data
        z_top = min(head.TransformIndexToPhysicalPoint((0, 0, top))[2] + TOP_MARGIN_MM, z_data_top)
    else:  # the head is cut at the top of the data
        z_top = z_data_top
    return (centroid[0], centroid[1]), z_top, z_bottom


def _coarse(image: sitk.Image) -> sitk.Image:
    """The image antialiased and resampled to at least WORK_MM per axis over the same extent (masks are
    computed there: distance maps and morphology at native resolution cost seconds)."""
    old = image.GetSpacing()
    new = [max(s, WORK_MM) for s in old]
    if list(new) == list(old):
        return image
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), old, new)]
    corner = [-0.5 + 0.5 * t / s for s, t in zip(old, new)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(new)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(corner))
    variance = [(0.4 ** 2) * max(t * t - s * s, 0.0) for s, t in zip(old, new)]
    blurred = sitk.DiscreteGaussian(image, variance=variance, maximumKernelWidth=32, useImageSpacing=True)
    return sitk.Resample(blurred, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def prepare_ct(image: sitk.Image, name="cranium_ct") -> RealVolume:
    """A real head CT: head mask (> -500 HU, largest component, holes filled in each slice), the head rest
    and the air outside the reconstruction circle set to -1000 HU, brain mask (5-60 HU, >= 10 mm inside the
    head, >= 3 mm from bone > 300 HU). Masks are on a WORK_MM grid."""
    ct = _lps(image)
    coarse = _coarse(ct)
    head = _fill_slices(_largest(coarse > CT_HEAD_HU))
    near_head = sitk.Resample(sitk.BinaryDilate(head, [2, 2, 1]), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(ct)
    array[sitk.GetArrayViewFromImage(near_head) == 0] = CT_AIR_HU
    ct = _like(array, ct)
    bone = sitk.Cast(coarse > CT_BONE_HU, sitk.sitkUInt8)
    from_bone = sitk.SignedMaurerDistanceMap(bone, insideIsPositive=False, squaredDistance=False,
                                             useImageSpacing=True)
    candidate = (coarse > 5) & (coarse < 60) & (_inside_distance(head) > 10) & (from_bone > 3)
    brain = _fill_slices(_largest(sitk.BinaryMorphologicalOpening(sitk.Cast(candidate, sitk.sitkUInt8),
                                                                   [1, 1, 1])))
    centre, z_top, z_bottom = _anchors(head, ct)
    return RealVolume(name, "CT", ct, head, brain, None, centre, z_top, z_bottom, CT_AIR_HU,
                      note="head rest and air outside the head (dilated ~4 mm) set to -1000 HU")


def prepare_mr(image: sitk.Image, name: str, brain: sitk.Image | None = None,
               tumour: sitk.Image | None = None) -> RealVolume:
    """A real T1 MR: head mask (0.6 x Otsu threshold of the smoothed image, largest component, holes
    filled); brain mask from a given skull-stripped image, else from intensity >= 12 mm inside the head.
    Masks are on a WORK_MM grid (the tumour mask stays native)."""
    mr = _lps(image)
    coarse = sitk.SmoothingRecursiveGaussian(_coarse(mr), 1.5)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(coarse)
    head = _fill_slices(_largest(coarse > 0.6 * otsu.GetThreshold()))
    depth = _inside_distance(head)
    if brain is not None:
        stripped = sitk.Resample(_lps(brain), head, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        brain_mask = _fill_slices(_largest(sitk.Cast(stripped > 0.5, sitk.sitkUInt8) & head))
        how = "brain mask from the skull-stripped image"
    else:
        array = sitk.GetArrayViewFromImage(coarse)
        low, high = np.percentile(array[sitk.GetArrayViewFromImage(depth) > 25], [15, 97])
        candidate = (depth > 12) & (coarse > 0.8 * float(low)) & (coarse < float(high))
        brain_mask = _fill_slices(_largest(sitk.BinaryMorphologicalOpening(
            sitk.Cast(candidate, sitk.sitkUInt8), [2, 2, 1])))
        how = "brain mask estimated from intensity >= 12 mm inside the head"
    tumour_mask = None
    if tumour is not None:
        tumour_mask = sitk.Cast(_lps(tumour) > 0.5, sitk.sitkUInt8)
    centre, z_top, z_bottom = _anchors(head, mr)
    return RealVolume(name, "MR", mr, head, brain_mask, tumour_mask, centre, z_top, z_bottom, 0.0, note=how)


# real T1 MR -> (brain mask or skull-stripped image, real tumour mask) among the sample images
MR_VOLUMES = {
    "colin27_t1": ("colin27_brain", None),
    "brain1_t1": (None, "brain1_tumour"),
    "brain2_t1": (None, "brain2_tumour"),
    "mni152_t1": ("mni152_brain", None),
    "mean_head_t1": (None, None),
}
# The MNI152 and mean-head T1s are averages of many heads; adding them (5 MRs instead of 3) made no
# difference that the seed spread could resolve (benchmark run 18), so the default stays the three single heads.
DEFAULT_MR_VOLUMES = ("colin27_t1", "brain1_t1", "brain2_t1")
# Not a real MR: "MR patients" that are T1s SIMULATED from augmentations of the real CT, as the check set's
# MR is. A control for the benchmark: a source domain that the paired check represents (the real T1s' heads
# differ from the one real CT), with lesions that follow the CT lesion through the mapping (dark on T1).
SIMULATED_T1 = "simulated_t1"


def needed_samples(mr_names=None) -> list:
    """The sample_data names a cohort with these real MRs reads (default: DEFAULT_MR_VOLUMES)."""
    names = ["cranium_ct"]
    for name in mr_names or DEFAULT_MR_VOLUMES:
        if name != SIMULATED_T1:
            names += [name] + [key for key in MR_VOLUMES.get(name, ()) if key]
    return names


def checked_mr_names(mr_names=None) -> list:
    """The MR source names (default: DEFAULT_MR_VOLUMES); a DuiitError names any that is not known."""
    mr_names = list(mr_names or DEFAULT_MR_VOLUMES)
    unknown = [name for name in mr_names if name not in MR_VOLUMES and name != SIMULATED_T1]
    if unknown:
        raise DuiitError(f"unknown real MR volume(s) {unknown} (known: {', '.join(MR_VOLUMES)}, {SIMULATED_T1})")
    return mr_names


def load_real_volumes(samples: dict, mr_names=None) -> list:
    """RealVolumes from the sample_data paths: [CT, then the MRs named in MR_VOLUMES (default:
    DEFAULT_MR_VOLUMES)]. SIMULATED_T1 stands for the CT volume itself (its MR is simulated per patient)."""
    read = lambda key: sitk.ReadImage(str(samples[key])) if key else None  # noqa: E731
    mr_names = checked_mr_names(mr_names)
    try:
        ct = prepare_ct(read("cranium_ct"))
        return [ct] + [ct if name == SIMULATED_T1 else prepare_mr(read(name), name, brain=read(MR_VOLUMES[name][0]),
                                                                  tumour=read(MR_VOLUMES[name][1]))
                       for name in mr_names]
    except (KeyError, RuntimeError) as exc:
        raise DuiitError(f"cannot read the sample images ({str(exc).strip().splitlines()[-1][:200]})") from None


# ----------------------------------------------------------------------------------------------
# augmentation onto the common head frame


@dataclass
class Augmentation:
    rotation_deg: float
    scale: float
    flip_lr: bool
    shift_mm: tuple

    @staticmethod
    def random(rng: np.random.Generator) -> "Augmentation":
        return Augmentation(rotation_deg=float(rng.uniform(-10, 10)), scale=float(rng.uniform(0.9, 1.1)),
                            flip_lr=bool(rng.random() < 0.5),
                            shift_mm=(float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5))))

    def as_dict(self) -> dict:
        return {"rotation_deg": round(self.rotation_deg, 3), "scale": round(self.scale, 4),
                "flip_lr": self.flip_lr, "shift_mm": [round(s, 3) for s in self.shift_mm]}


def _grid(volume: RealVolume, preset: str, augmentation: Augmentation) -> sitk.Image:
    """The output grid (LPS, identity direction): in-plane FOV_MM centred on the head, top slice just under
    the top anchor, as many slices as the scaled data covers (at most the preset's)."""
    size, dz, max_slices = PRESETS[preset]
    spacing = FOV_MM / size
    slices = int(min(max_slices, math.floor(volume.coverage_mm * augmentation.scale / dz + 0.5)))
    if slices < 2:
        raise DuiitError(f"{volume.name}: covers too little of the head for the {preset} grid")
    grid = sitk.Image(size, size, slices, sitk.sitkFloat32)
    grid.SetSpacing((spacing, spacing, dz))
    grid.SetOrigin((-FOV_MM / 2 + spacing / 2, -FOV_MM / 2 + spacing / 2, -(slices - 0.5) * dz))
    return grid


def _transform(volume: RealVolume, augmentation: Augmentation) -> sitk.AffineTransform:
    """Output point -> source point. Output frame: head centre at x = y = 0, top anchor at z = 0.
    p_out = s R F (p_src - c) + t  =>  p_src = c + (s R F)^-1 (p_out - t)."""
    theta = math.radians(augmentation.rotation_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    flip = np.diag([-1.0 if augmentation.flip_lr else 1.0, 1.0, 1.0])
    forward = augmentation.scale * rotation @ flip
    inverse = np.linalg.inv(forward)
    centre = np.array([volume.centre_xy[0], volume.centre_xy[1], volume.z_top])
    shift = np.array([augmentation.shift_mm[0], augmentation.shift_mm[1], 0.0])
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(inverse.ravel().tolist())
    transform.SetTranslation((centre - inverse @ shift).tolist())
    return transform


def _antialiased(volume: RealVolume, preset: str) -> sitk.Image:
    """The real image blurred so that resampling to the preset's grid does not alias (cached)."""
    if preset not in volume.smoothed:
        size, dz, _ = PRESETS[preset]
        target = (FOV_MM / size, FOV_MM / size, dz)
        variance = [(0.4 ** 2) * max(t * t - s * s, 0.0) for t, s in zip(target, volume.image.GetSpacing())]
        volume.smoothed[preset] = (sitk.DiscreteGaussian(volume.image, variance=variance, maximumKernelWidth=64,
                                                         useImageSpacing=True) if max(variance) > 0
                                   else volume.image)
    return volume.smoothed[preset]


def _resample(image, grid, transform, default, interpolator=sitk.sitkLinear) -> np.ndarray:
    out = sitk.Resample(image, grid, transform, interpolator, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _resample_mask(mask, grid, transform) -> np.ndarray:
    return (_resample(sitk.Cast(mask, sitk.sitkFloat32), grid, transform, 0.0) >= 0.5).astype(np.uint8)


def augmented(volume: RealVolume, preset: str, augmentation: Augmentation) -> dict:
    """The real volume resampled onto its augmented output grid: {"grid", "image", "head", "brain", "tumour"}."""
    grid = _grid(volume, preset, augmentation)
    transform = _transform(volume, augmentation)
    result = {"grid": grid,
              "image": _resample(_antialiased(volume, preset), grid, transform, volume.background),
              "head": _resample_mask(volume.head, grid, transform),
              "brain": _resample_mask(volume.brain, grid, transform)}
    result["tumour"] = (_resample_mask(volume.tumour, grid, transform) if volume.tumour is not None
                        else np.zeros_like(result["head"]))
    return result


# ----------------------------------------------------------------------------------------------
# simulated lesions


@dataclass
class Lesion:
    centre_mm: tuple
    semi_axes_mm: tuple
    angle_deg: float
    contrast: float  # CT: absolute HU; MR: gain over the local brain intensity

    def as_dict(self) -> dict:
        return {"centre_mm": [round(c, 2) for c in self.centre_mm],
                "semi_axes_mm": [round(a, 2) for a in self.semi_axes_mm],
                "angle_deg": round(self.angle_deg, 2), "contrast": round(self.contrast, 3)}


def _physical_axes(grid: sitk.Image):
    """1D physical coordinates (x, y, z) of an identity-direction grid."""
    return [grid.GetOrigin()[d] + grid.GetSpacing()[d] * np.arange(grid.GetSize()[d]) for d in range(3)]


def place_lesions(brain: np.ndarray, grid: sitk.Image, count: int, rng: np.random.Generator,
                  modality: str, avoid: np.ndarray | None = None, mr_gain=MR_LESION_GAIN) -> list:
    """Up to `count` non-overlapping ellipsoids inside `brain`, their surfaces >= SKULL_CLEARANCE_MM from
    its edge, centred on voxel centres in the LESION_Z_RANGE part of the head's height. An MR lesion's gain
    over the local brain is drawn from the range mr_gain."""
    if count <= 0 or not brain.any():
        return []
    depth = sitk.GetArrayFromImage(_inside_distance(_like(brain.astype(np.uint8), grid)))
    if avoid is not None and avoid.any():
        away = -sitk.GetArrayFromImage(_inside_distance(_like(avoid.astype(np.uint8), grid)))
    else:
        away = np.full(brain.shape, np.inf, dtype=np.float32)
    heads = np.nonzero(brain.reshape(brain.shape[0], -1).any(1))[0]
    low, high = heads.min(), heads.max()
    z_lo = int(low + LESION_Z_RANGE[0] * (high - low))
    z_hi = int(math.ceil(low + LESION_Z_RANGE[1] * (high - low)))
    xs, ys, zs = _physical_axes(grid)
    lesions = []
    for _ in range(count):
        for _attempt in range(8):
            radius = float(rng.uniform(*LESION_RADIUS_MM))
            axes = tuple(float(np.clip(radius * rng.uniform(0.8, 1.2), *LESION_RADIUS_MM)) for _ in range(3))
            reach = max(axes)
            ok = (depth >= reach + SKULL_CLEARANCE_MM) & (away >= reach + 3.0)
            ok[:z_lo] = False
            ok[z_hi + 1:] = False
            for other in lesions:
                distance = np.sqrt(((zs - other.centre_mm[2]) ** 2)[:, None, None]
                                   + ((ys - other.centre_mm[1]) ** 2)[None, :, None]
                                   + ((xs - other.centre_mm[0]) ** 2)[None, None, :])
                ok &= distance >= reach + max(other.semi_axes_mm) + 2.0
            candidates = np.flatnonzero(ok)
            if candidates.size:
                k, j, i = np.unravel_index(int(rng.choice(candidates)), brain.shape)
                gain = CT_LESION_HU if modality == "CT" else mr_gain
                lesions.append(Lesion((float(xs[i]), float(ys[j]), float(zs[k])), axes,
                                      float(rng.uniform(0, 180)), float(rng.uniform(*gain))))
                break
    return lesions


def _lesion_box(lesion: Lesion, grid: sitk.Image, margin_mm: float) -> tuple:
    """Array slices (z, y, x) of the grid covering the lesion's bounding sphere plus margin_mm."""
    reach = max(lesion.semi_axes_mm) + margin_mm
    box = []
    for d in (2, 1, 0):
        origin, step, n = grid.GetOrigin()[d], grid.GetSpacing()[d], grid.GetSize()[d]
        low = int(max(0, math.floor((lesion.centre_mm[d] - reach - origin) / step)))
        high = int(min(n, math.ceil((lesion.centre_mm[d] + reach - origin) / step) + 1))
        box.append(slice(low, max(low, high)))
    return tuple(box)


def _box_weight(lesion: Lesion, grid: sitk.Image, box: tuple) -> np.ndarray:
    xs, ys, zs = _physical_axes(grid)
    z = (zs[box[0]] - lesion.centre_mm[2]).astype(np.float32)[:, None, None]
    y = (ys[box[1]] - lesion.centre_mm[1]).astype(np.float32)[None, :, None]
    x = (xs[box[2]] - lesion.centre_mm[0]).astype(np.float32)[None, None, :]
    angle = math.radians(lesion.angle_deg)
    u = math.cos(angle) * x + math.sin(angle) * y
    v = -math.sin(angle) * x + math.cos(angle) * y
    a, b, c = lesion.semi_axes_mm
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (z / c) ** 2)
    scale = (a + b + c) / 3.0 / LESION_EDGE_MM
    return (1.0 / (1.0 + np.exp(-np.clip((1.0 - rho) * scale, -50, 50)))).astype(np.float32)


def lesion_weight(lesion: Lesion, grid: sitk.Image) -> np.ndarray:
    """Smooth occupancy in [0, 1] of an ellipsoid (0.5 on its surface, LESION_EDGE_MM wide edge), on the grid."""
    weight = np.zeros(grid.GetSize()[::-1], dtype=np.float32)
    box = _lesion_box(lesion, grid, 8 * LESION_EDGE_MM)
    weight[box] = _box_weight(lesion, grid, box)
    return weight


def _smooth_field(shape, rng: np.random.Generator, amplitude: float, waves=4) -> np.ndarray:
    """A smooth random field (sum of a few low-frequency cosines), zero mean, about +-amplitude."""
    axes = [np.linspace(0.0, 1.0, n, dtype=np.float32) for n in shape]
    total = np.zeros(shape, dtype=np.float32)
    for _ in range(waves):
        frequency = rng.uniform(0.5, 2.5, size=3)
        phase = np.float32(rng.uniform(0, 2 * math.pi))
        total += np.cos((np.float32(2 * math.pi * frequency[0]) * axes[0])[:, None, None]
                        + (np.float32(2 * math.pi * frequency[1]) * axes[1])[None, :, None]
                        + (np.float32(2 * math.pi * frequency[2]) * axes[2])[None, None, :] + phase)
    return (amplitude / math.sqrt(waves / 2.0)) * total


def insert_lesions(image: np.ndarray, brain: np.ndarray, lesions: list, grid: sitk.Image, modality: str,
                   rng: np.random.Generator) -> tuple:
    """(image with the lesions, lesion mask uint8 (1 inside)). CT: blend toward the lesion's absolute HU
    (+-4 HU texture); MR: blend toward (1 + gain) x the median brain intensity within 10 mm of the lesion,
    with +-15 % smooth heterogeneity."""
    image = image.copy()
    mask = np.zeros(image.shape, dtype=np.uint8)
    for lesion in lesions:
        box = _lesion_box(lesion, grid, 8 * LESION_EDGE_MM)
        weight = _box_weight(lesion, grid, box)
        mask[box][weight >= 0.5] = 1
        region = weight > 0.01
        part = image[box]
        if modality == "CT":
            target = lesion.contrast + rng.normal(0.0, 4.0, size=int(region.sum()))
        else:
            near = Lesion(lesion.centre_mm, tuple(a + 10.0 for a in lesion.semi_axes_mm), 0.0, 0.0)
            near_box = _lesion_box(near, grid, 0.0)
            reference = image[near_box][(_box_weight(near, grid, near_box) > 0.5) & (brain[near_box] > 0)]
            local = float(np.median(reference)) if reference.size else float(np.median(image[brain > 0]))
            heterogeneity = _smooth_field(part.shape, rng, 0.15)[region]
            target = local * (1.0 + lesion.contrast) * (1.0 + heterogeneity)
        part[region] = (1.0 - weight[region]) * part[region] + weight[region] * target
        image[box] = part
    return image, mask


# ----------------------------------------------------------------------------------------------
# intensity jitter and the simulated MR


def jitter_ct(hu: np.ndarray, rng: np.random.Generator) -> tuple:
    gain, offset, noise = float(rng.uniform(0.99, 1.01)), float(rng.uniform(-5, 5)), float(rng.uniform(2, 8))
    out = hu * gain + offset + rng.normal(0.0, noise, size=hu.shape).astype(np.float32)
    out = np.clip(np.rint(out), -1024, 3071).astype(np.int16)
    return out, {"gain": round(gain, 4), "offset_hu": round(offset, 2), "noise_sd_hu": round(noise, 2)}


def jitter_mr(signal: np.ndarray, rng: np.random.Generator, head: np.ndarray) -> tuple:
    reference = float(np.percentile(signal[head > 0], 99)) if head.any() else float(signal.max()) or 1.0
    gamma, gain = float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.8, 1.25))
    bias = float(rng.uniform(0.05, 0.2))
    noise = float(rng.uniform(0.005, 0.02))
    out = reference * np.power(np.clip(signal, 0, None) / reference, gamma)
    out = out * gain * np.exp(_smooth_field(signal.shape, rng, bias, waves=3))
    sd = noise * reference * gain
    real = out + rng.normal(0.0, sd, size=out.shape)
    imaginary = rng.normal(0.0, sd, size=out.shape)
    out = np.sqrt(real * real + imaginary * imaginary).astype(np.float32)  # Rician, like a magnitude image
    return out, {"gamma": round(gamma, 4), "gain": round(gain, 4), "bias_field_amplitude": round(bias, 4),
                 "rician_noise_sd_fraction": round(noise, 4)}


# T1-like signal (0..1) for smoothed HU, per tissue, for the SIMULATED MR of the paired check set:
# air dark; fat bright; CSF dark; white matter brighter than grey matter (CT: WM ~15-22 HU, GM ~28-35 HU
# in this scanner); muscle/blood mid-dark; diploe mid (fatty marrow); cortical bone dark.
T1_FROM_HU = (
    (-1000.0, 0.00), (-400.0, 0.02), (-200.0, 0.40), (-100.0, 0.90), (-60.0, 0.85), (-20.0, 0.35),
    (0.0, 0.12), (8.0, 0.15), (16.0, 0.62), (22.0, 0.60), (30.0, 0.45), (40.0, 0.42), (70.0, 0.38),
    (150.0, 0.32), (400.0, 0.28), (800.0, 0.08), (3071.0, 0.03),
)
T1_HU_SMOOTHING_MM = 1.5


def simulate_t1_from_ct(hu: np.ndarray, grid: sitk.Image, rng: np.random.Generator) -> tuple:
    """A T1-like MR SIMULATED from real CT HU: the tissue mapping T1_FROM_HU on HU smoothed by 1.5 mm (so
    CT noise does not flip tissue classes), a smooth multiplicative bias field (+-15 %), scaled to ~1000, and
    Rician noise (1.5 % of 1000). Not a real MR; for measuring translation fidelity against the real CT.
    `hu` should be the CT before its simulated scanner noise (make_case's "clean"): at 2-4 mm pixels a 1.5 mm
    smoothing cannot remove that noise, which crosses the steep grey/white-matter knots and turns the MR to
    salt and pepper, unlike any real T1 the translators are trained on."""
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(_like(hu.astype(np.float32), grid),
                                                                    T1_HU_SMOOTHING_MM))
    knots_hu, knots_t1 = zip(*T1_FROM_HU)
    signal = np.interp(smooth, knots_hu, knots_t1).astype(np.float32) * 1000.0
    bias = float(rng.uniform(0.05, 0.15))
    signal *= np.exp(_smooth_field(signal.shape, rng, bias, waves=3))
    sd = 15.0
    real = signal + rng.normal(0.0, sd, size=signal.shape)
    imaginary = rng.normal(0.0, sd, size=signal.shape)
    mr = np.sqrt(real * real + imaginary * imaginary).astype(np.float32)
    return mr, {"mapping": "T1_FROM_HU (HU, T1) knots", "knots": [list(k) for k in T1_FROM_HU],
                "hu_smoothing_mm": T1_HU_SMOOTHING_MM, "from": "the CT before its scanner-noise jitter",
                "bias_field_amplitude": round(bias, 4), "rician_noise_sd": sd,
                "note": SIMULATED_MR_NOTE}


# ----------------------------------------------------------------------------------------------
# the cohort


def _write(array: np.ndarray, grid: sitk.Image, path: Path) -> None:
    image = _like(array, grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def _lesion_plan(n: int, fraction: float, rng: np.random.Generator) -> list:
    """How many lesions each of n patients gets: round(fraction * n) patients (at least one, and at least
    one without when n >= 2) get 1-3 lesions (60/30/10 %)."""
    with_lesion = min(max(1, int(round(fraction * n))), n - 1 if n >= 2 else n)
    order = rng.permutation(n)
    plan = [0] * n
    for index in order[:with_lesion]:
        plan[int(index)] = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    return plan


def case_rng(seed: int, role: str, index: int) -> np.random.Generator:
    """The random stream of one patient: role "CT", "MR", "CHECK" or "CTU" (unlabelled CT), index from 0
    (benchmarks rebuild cases)."""
    return np.random.default_rng([int(seed), {"CT": 1, "MR": 2, "CHECK": 3, "CTU": 4}[role], int(index)])


def make_case(volume: RealVolume, preset: str, rng: np.random.Generator, n_lesions: int,
              mr_lesion_gain=MR_LESION_GAIN, twin: bool = False) -> dict:
    """One augmented patient: {"grid", "image", "clean", "head", "lesion_mask", "record"} (image: int16 HU for
    CT, float32 for MR; clean: the image before its intensity jitter and noise; lesion_mask: 1 simulated
    lesion, 2 real tumour). `twin`: also "twin_image" / "twin_clean", the same patient without its simulated
    lesions (the same augmentation, jitter and noise), a negative whose level in the head matches. The
    draws of `rng` do not depend on it."""
    augmentation = Augmentation.random(rng)
    data = augmented(volume, preset, augmentation)
    grid = data["grid"]
    lesions = place_lesions(data["brain"], grid, n_lesions, rng, volume.modality, avoid=data["tumour"],
                            mr_gain=mr_lesion_gain)
    image, mask = insert_lesions(data["image"], data["brain"], lesions, grid, volume.modality, rng)
    clean = image
    twin_rng = copy.deepcopy(rng) if twin else None  # the twin's jitter and noise: the same draws

    def jittered(plain, stream):
        return jitter_ct(plain, stream) if volume.modality == "CT" else jitter_mr(plain, stream, data["head"])

    image, jitter = jittered(image, rng)
    mask[data["tumour"] > 0] = 2
    record = {"source_volume": volume.name, "augmentation": augmentation.as_dict(), "intensity": jitter,
              "lesions_requested": n_lesions, "simulated_lesions": [les.as_dict() for les in lesions],
              "real_tumour_voxels": int((data["tumour"] > 0).sum()), "size": list(grid.GetSize()),
              "spacing_mm": [round(s, 4) for s in grid.GetSpacing()],
              "lesion_slices": [int(k) for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]]}
    case = {"grid": grid, "image": image, "clean": clean, "head": data["head"], "lesion_mask": mask,
            "record": record}
    if twin:
        case["twin_image"], case["twin_clean"] = jittered(data["image"], twin_rng)[0], data["image"]
    return case


def simulated_mr_case(ct_volume: RealVolume, preset: str, rng: np.random.Generator, n_lesions: int,
                      twin: bool = False) -> dict:
    """One augmented CT patient (its lesions with the CT contrast) and the T1 SIMULATED from it: make_case's
    dict with "mr" and "mr_simulation" added (and "twin_mr", simulated from the twin, with `twin`)."""
    case = make_case(ct_volume, preset, rng, n_lesions, twin=twin)
    twin_rng = copy.deepcopy(rng) if twin else None
    case["mr"], case["mr_simulation"] = simulate_t1_from_ct(case["clean"].astype(np.float32), case["grid"], rng)
    if twin:
        case["twin_mr"] = simulate_t1_from_ct(case["twin_clean"].astype(np.float32), case["grid"], twin_rng)[0]
    return case


def build_cohort(out_dir, n_ct_patients=8, n_mr_patients=12, seed=0, size="small", n_check=2,
                 ct_train_fraction=0.25, lesion_fraction=0.5, cache_dir=None, samples=None,
                 real_volumes=None, mr_volumes=None, mr_lesion_gain=MR_LESION_GAIN, n_ct_unlabelled=0,
                 twins=False, progress=None) -> Path:
    """Write a labelled head MR -> CT cohort into out_dir and return the path of its manifest.csv.

    n_ct_patients augmentations of the real CT (split: round(ct_train_fraction * n), at least 1, "train",
    the rest "test"), n_mr_patients augmentations of the real MRs in turn (all "train"), n_ct_unlabelled more
    CT augmentations without a label (split "unlabelled": for the translator; lesions as often as in the
    labelled CT; the other patients do not depend on it), and n_check
    held-out CT augmentations with their SIMULATED MR (check_manifest.csv). size: "tiny", "small" or
    "full" (see PRESETS). samples: {name: path} as from sample_data.fetch (what it needs is fetched if None);
    real_volumes: the list from load_real_volumes(samples), to reuse one already loaded; mr_volumes: names
    of the real MRs to use (default: DEFAULT_MR_VOLUMES; SIMULATED_T1 for T1s simulated from augmentations of
    the real CT, whose lesions are the CT's seen through the mapping), when real_volumes is None;
    mr_lesion_gain: the range of a simulated MR lesion's brightness over the local brain (0.3-0.6:
    subacute-blood-like; lower for lesions that T1 shows faintly; negative for lesions darker than the brain, as
    acute blood on T1).
    The random draws do not depend on it, so two cohorts that differ only in it have the same patients and
    lesions.
    twins: each labelled patient with simulated lesions (and no real tumour) also gets a lesion-free twin,
    "<patient>-twin" in the same split, labelled "none": the same augmentation, jitter and noise without the
    lesions, so that a slice's level in the head says nothing about its label. The other patients do not
    depend on it.
    out_dir is replaced as a whole (atomically) if it is an earlier cohort; any other non-empty folder is
    refused.
    """
    if size not in PRESETS:
        raise DuiitError(f"unknown cohort size {size!r} (use {', '.join(PRESETS)})")
    if n_ct_patients < 2 or n_mr_patients < 1 or n_check < 0:
        raise DuiitError("a cohort needs at least 2 CT patients (train and test) and 1 MR patient")
    if n_ct_unlabelled < 0:
        raise DuiitError(f"{n_ct_unlabelled} unlabelled CT patients: give 0 or more")
    mr_lesion_gain = tuple(float(g) for g in mr_lesion_gain)
    if len(mr_lesion_gain) != 2 or not (0.0 < mr_lesion_gain[0] <= mr_lesion_gain[1]
                                        or -1.0 < mr_lesion_gain[0] <= mr_lesion_gain[1] < 0.0):
        raise DuiitError(f"MR lesion gain {mr_lesion_gain}: give a range LOW,HIGH with 0 < LOW <= HIGH "
                         "(brighter than the brain) or -1 < LOW <= HIGH < 0 (darker)")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / "cohort.json").is_file())):
        raise DuiitError(f"{out_dir}: exists and is not a DUIIT cohort folder; choose another output folder")
    say = progress or (lambda message: None)
    if real_volumes is None:
        mr_volumes = checked_mr_names(mr_volumes)  # before fetching anything for them
    if samples is None:
        from .sample_data import fetch
        samples = {name: fetch(name, cache_dir) for name in needed_samples(mr_volumes)}
    started = time.monotonic()
    volumes = real_volumes or load_real_volumes(samples, mr_volumes)
    ct_volume, mr_volumes = volumes[0], volumes[1:]
    n_train = min(n_ct_patients - 1, max(1, int(round(ct_train_fraction * n_ct_patients))))
    plan_rng = np.random.default_rng([int(seed), 0])
    ct_plan = (_lesion_plan(n_train, lesion_fraction, plan_rng)
               + _lesion_plan(n_ct_patients - n_train, lesion_fraction, plan_rng))
    mr_plan = _lesion_plan(n_mr_patients, lesion_fraction, plan_rng)
    unlabelled_plan = _lesion_plan(n_ct_unlabelled, lesion_fraction, plan_rng) if n_ct_unlabelled else []
    rows, check_rows, cases = [], [], {}
    with atomic_directory(out_dir) as tmp:
        jobs = ([("CT", i, ct_volume, ct_plan[i], "train" if i < n_train else "test") for i in range(n_ct_patients)]
                + [("MR", i, mr_volumes[i % len(mr_volumes)], mr_plan[i], "train") for i in range(n_mr_patients)]
                + [("CTU", i, ct_volume, unlabelled_plan[i], UNLABELLED) for i in range(n_ct_unlabelled)])
        for role, index, volume, n_lesions, split in jobs:
            patient = f"{role}-{index + 1:03d}"
            simulated = role == "MR" and volume.modality == "CT"  # SIMULATED_T1 stands for the CT volume
            twin = twins and split != UNLABELLED and n_lesions > 0
            if simulated:
                case = simulated_mr_case(volume, size, case_rng(seed, role, index), n_lesions, twin)
                case["record"]["mr_simulation"] = case["mr_simulation"]
            else:
                case = make_case(volume, size, case_rng(seed, role, index), n_lesions, mr_lesion_gain, twin)
            folder = role.lower()
            names = {"path": f"{folder}/{patient}.nii.gz", "mask": f"{folder}/{patient}_lesion.nii.gz",
                     "head_mask": f"{folder}/{patient}_head.nii.gz"}
            _write(case["mr"] if simulated else case["image"], case["grid"], tmp / names["path"])
            _write(case["lesion_mask"], case["grid"], tmp / names["mask"])
            _write(case["head"], case["grid"], tmp / names["head_mask"])
            label = "lesion" if case["lesion_mask"].any() else "none"
            source_name = f"{SIMULATED_T1} (from {volume.name})" if simulated else volume.name
            modality = "CT" if role == "CTU" else role
            row = dict(names, modality=modality, label=label, patient_id=patient, split=split,
                       source_volume=source_name)
            if split == UNLABELLED:  # its lesions are recorded in cohort.json, not given to training
                row.update(label="", mask="")
            rows.append(row)
            cases[patient] = dict(case["record"], source_volume=source_name, modality=modality, label=label,
                                  split=split)
            say(f"{patient}: {source_name}, {label}, {len(case['record']['lesion_slices'])} lesion slices")
            if twin and case["record"]["simulated_lesions"] and not case["record"]["real_tumour_voxels"]:
                twin_path = f"{folder}/{patient}-twin.nii.gz"
                _write(case["twin_mr"] if simulated else case["twin_image"], case["grid"], tmp / twin_path)
                rows.append(dict(row, path=twin_path, mask="", label="none", patient_id=f"{patient}-twin"))
                cases[f"{patient}-twin"] = dict(cases[patient], label="none", lesion_slices=[], simulated_lesions=[],
                                                twin_of=patient)
        for index in range(n_check):
            patient = f"CHECK-{index + 1:02d}"
            case = simulated_mr_case(ct_volume, size, case_rng(seed, "CHECK", index), 0)
            names = {"path": f"check/{patient}_mr_simulated.nii.gz", "paired_ct": f"check/{patient}_ct.nii.gz",
                     "head_mask": f"check/{patient}_head.nii.gz"}
            _write(case["mr"], case["grid"], tmp / names["path"])
            _write(case["image"], case["grid"], tmp / names["paired_ct"])
            _write(case["head"], case["grid"], tmp / names["head_mask"])
            check_rows.append(dict(names, modality="MR", label="none", patient_id=patient, split="test",
                                   source_volume=ct_volume.name, simulated="yes"))
            cases[patient] = dict(case["record"], modality="MR (simulated) + CT (real)", label="none",
                                  split="test", mr_simulation=case["mr_simulation"])
            say(f"{patient}: simulated MR from {ct_volume.name}")
        write_manifest(rows, tmp / "manifest.csv")
        if check_rows:
            write_manifest(check_rows, tmp / "check_manifest.csv")
        summary = _summary(volumes, samples, size, seed, rows, check_rows, cases, time.monotonic() - started,
                           mr_lesion_gain)
        (tmp / "cohort.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir / "manifest.csv"


def _summary(volumes, samples, size, seed, rows, check_rows, cases, seconds, mr_lesion_gain) -> dict:
    n_unlabelled = sum(r["split"] == UNLABELLED for r in rows)
    n_ct = sum(r["modality"] == "CT" for r in rows) - n_unlabelled
    n_mr = sum(r["modality"] == "MR" for r in rows)
    n_simulated = sum(r["modality"] == "MR" and r["source_volume"].startswith(SIMULATED_T1) for r in rows)
    real_mrs = [v for v in volumes[1:] if v.modality == "MR"]
    mr_sources = ([f"{n_mr - n_simulated} MR patients are augmentations of {len(real_mrs)} real MR volumes"]
                  if real_mrs else [])
    if n_simulated:
        mr_sources.append(f"{n_simulated} MR patients are T1s SIMULATED from other augmentations of the real CT")
    pixels, dz, max_slices = PRESETS[size]
    try:
        from .sample_data import provenance
        sources = provenance(Path(samples["cranium_ct"]).parent.parent)
    except Exception:  # provenance is informative only
        sources = {}
    return {
        "what": (f"{n_ct} CT patients" + (f" (and {n_unlabelled} unlabelled ones, for the translator)"
                                          if n_unlabelled else "")
                 + " are augmentations of 1 real CT volume; " + "; ".join(mr_sources)
                 + "; lesions are simulated" + (" (brain1/brain2 real tumours kept, mask value 2)" if real_mrs else "")
                 + f"; check set: {len(check_rows)} held-out CT augmentations with {SIMULATED_MR_NOTE}"),
        "real_volumes": [{"name": v.name, "modality": v.modality, "native_size": list(v.image.GetSize()),
                          "native_spacing_mm": [round(s, 4) for s in v.image.GetSpacing()],
                          "head_height_covered_mm": round(v.coverage_mm, 1), "note": v.note,
                          "source": sources.get(v.name, {}).get("package", str(samples.get(v.name, "")))}
                         for v in [volumes[0]] + real_mrs],
        "grid": {"preset": size, "in_plane_pixels": pixels, "fov_mm": FOV_MM, "pixel_mm": FOV_MM / pixels,
                 "slice_mm": dz, "max_slices": max_slices, "orientation": "LPS (identity direction)",
                 "z_frame": "z = 0 at the top anchor (vertex + 4 mm, or the data's top), slices downward"},
        "lesions": {"radius_mm": LESION_RADIUS_MM, "ct_absolute_hu": CT_LESION_HU,
                    "mr_gain_over_local_brain": mr_lesion_gain, "edge_mm": LESION_EDGE_MM,
                    "mask_values": {"1": "simulated lesion", "2": "real tumour (pyradiomics label)"},
                    "slice_label": "lesion present iff the mask slice has a voxel > 0"},
        "seed": seed, "build_seconds": round(seconds, 1),
        "counts": {"ct": n_ct, "ct_unlabelled": n_unlabelled, "mr": n_mr, "mr_simulated": n_simulated,
                   "check": len(check_rows),
                   "ct_lesion": sum(r["modality"] == "CT" and r["label"] == "lesion" for r in rows),
                   "mr_lesion": sum(r["modality"] == "MR" and r["label"] == "lesion" for r in rows)},
        "cases": cases,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duiit.head_cohort",
                                     description="Build a labelled head MR -> CT cohort from the real sample images.")
    parser.add_argument("out_dir")
    parser.add_argument("--ct", type=int, default=8, help="CT patients (default 8)")
    parser.add_argument("--mr", type=int, default=12, help="MR patients (default 12)")
    parser.add_argument("--ct-unlabelled", type=int, default=0,
                        help="more CT patients without a label, for the translator (default 0)")
    parser.add_argument("--check", type=int, default=2, help="paired check volumes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(PRESETS), default="small")
    parser.add_argument("--mr-volumes", type=lambda text: text.split(","),
                        help=f"real MRs to augment, comma-separated, from {', '.join(MR_VOLUMES)}, or {SIMULATED_T1} "
                             f"(default: {','.join(DEFAULT_MR_VOLUMES)})")
    parser.add_argument("--mr-lesion-gain", type=lambda text: [float(v) for v in text.split(",")],
                        default=list(MR_LESION_GAIN), help="LOW,HIGH: an MR lesion's brightness over the local brain "
                        "(default 0.3,0.6; negative, e.g. -0.35,-0.2, for lesions darker than the brain)")
    parser.add_argument("--twins", action="store_true",
                        help="a lesion-free twin of each labelled lesion patient, as a negative in the same split")
    parser.add_argument("--cache", help="sample image cache folder (default $DUIIT_CACHE or ~/.cache/duiit)")
    args = parser.parse_args(argv)
    try:
        manifest = build_cohort(args.out_dir, n_ct_patients=args.ct, n_mr_patients=args.mr, n_check=args.check,
                                seed=args.seed, size=args.size, cache_dir=args.cache, mr_volumes=args.mr_volumes,
                                mr_lesion_gain=args.mr_lesion_gain, n_ct_unlabelled=args.ct_unlabelled,
                                twins=args.twins, progress=lambda message: print(message, file=sys.stderr))
    except DuiitError as exc:
        print(f"duiit: error: {exc}", file=sys.stderr)
        return 2
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
