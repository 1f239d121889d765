"""Intensity normalisation per modality to the networks' range [-1, 1], and back to HU for CT.

CT: fixed, invertible piecewise-linear map of [-1024, 3071] HU (soft tissue gets most of the range).
MR: per volume, the background's level -> -1 and the median of the foreground (Otsu) -> 0; then, in a
    bundle's training and translation, the foreground's histogram landmarks -> the training set's standard.
PT: SUV (body weight) from DICOM tags when they allow it, a fixed SUV range then; percentiles otherwise.
The choice made for each volume is returned so it can be recorded in the bundle.
"""

import math

import numpy as np

from .suv import suv_factor

CT_LOW_HU, CT_HIGH_HU = -1024.0, 3071.0
# Why not one straight line: it gives soft tissue (-150..150 HU) 7 % of [-1, 1], so a generator error of 0.05
# is 100 HU in the brain and a +50 HU lesion is 0.02 for the predictor. These knots give soft tissue 45 % of
# the range (330 HU per unit), air..fat the same slope as before, bone half of it (4200 HU per unit).
# Measured on the real-image benchmark (one seed, 250 iterations, side by side): paired MAE 378 -> 318 HU
# (cyclegan), a skull ring and a flat brain in G(MR) where the linear map gave noise.
CT_KNOTS_HU = (CT_LOW_HU, -150.0, 150.0, CT_HIGH_HU)
CT_KNOTS_UNIT = (-1.0, -0.6, 0.3, 1.0)
PERCENTILES = (0.5, 99.5)
# MR has no absolute scale and T1s from different scanners differ in how bright the brain is against fat:
# with the 99.5th percentile (fat, vessels) as the top, the median head voxel of the augmented sample T1s
# lay anywhere in -0.28..+0.25 (Colin27 bright, pyradiomics brain1/brain2 dark). Anchoring the foreground's
# median (a head is mostly brain) at 0 puts it at 0.00..0.02 for all; tissue above twice it (fat) clips at 1.
MR_FOREGROUND_MEDIAN_UNIT = 0.0
# Histogram standardisation (Nyul & Udupa, Magn Reson Med 1999; Nyul et al., IEEE TMI 2000): two anchors
# leave the rest of the contrast to the scanner (Colin27's 90th foreground percentile sat at 0.36-0.61, the
# pyradiomics T1s' at 0.72-0.95), so each MR volume's foreground percentiles are mapped piecewise linearly
# onto the mean of the training volumes' (its "standard"), which the bundle keeps for translation. Measured on
# the real-image benchmark (runs 150-160, side by side): paired MAE 10-20 HU lower on 83 of 84 seed pairs, AUC
# level but for DUIIT with Colin27 as the only MR (-0.006).
MR_LANDMARK_PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
# The standard also takes away contrast variety between the training volumes. Training each MR volume onto
# the standard bent by a gamma of its own (bend_standard; --mr-contrast-jitter 0.15: [0.85, 1.15]) seemed to
# give DUIIT with Colin27 as the only MR its AUC back, but that was one draw of gammas shared by every seed
# (runs 167-170); drawn per training seed it is level with the plain standard in AUC and paired MAE on both
# real-T1 cohorts (runs 171-176): opt-in, off by default.
MR_CONTRAST_JITTER = 0.0
SUV_RANGE = (0.0, 20.0)


def _piecewise_linear(x, xs, ys):
    """Monotone piecewise-linear map through the knots (xs, ys), clamped to [ys[0], ys[-1]] outside them;
    one expression for numpy arrays and torch tensors."""
    y = ys[0]
    for i in range(len(xs) - 1):
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        y = y + slope * (x - xs[i]).clip(0.0, xs[i + 1] - xs[i])
    return y


def ct_knots(record: dict | None = None) -> tuple:
    """(knots in HU, knots in network units) of a CT normalisation record (None: the current mapping)."""
    if record is None:
        return CT_KNOTS_HU, CT_KNOTS_UNIT
    if record["method"] == "ct_hu":  # the plain linear map of bundles written before the knots
        return (float(record.get("low", CT_LOW_HU)), float(record.get("high", CT_HIGH_HU))), (-1.0, 1.0)
    if record["method"] == "ct_hu_piecewise":
        xs, ys = tuple(map(float, record["knots_hu"])), tuple(map(float, record["knots_unit"]))
        if (len(xs) != len(ys) or len(xs) < 2 or not all(map(math.isfinite, xs + ys))
                or any(b <= a for a, b in zip(xs, xs[1:])) or any(b <= a for a, b in zip(ys, ys[1:]))):
            raise ValueError(f"CT knots must rise strictly and pair up: {record['knots_hu']}, {record['knots_unit']}")
        return xs, ys
    raise ValueError(f"not a CT normalisation: {record['method']!r}")


def hu_to_unit(hu, record: dict | None = None):
    """HU -> [-1, 1] (clipped); works on numpy arrays and torch tensors."""
    xs, ys = ct_knots(record)
    return _piecewise_linear(hu, xs, ys)


def unit_to_hu(unit, record: dict | None = None):
    """[-1, 1] -> HU, the inverse of hu_to_unit with the same record."""
    xs, ys = ct_knots(record)
    return _piecewise_linear(unit, ys, xs)


def _linear(array, low, high, clip=True):
    if high <= low:
        high = low + 1.0
    unit = (array - low) / (high - low) * 2.0 - 1.0
    return (np.clip(unit, -1.0, 1.0) if clip else unit).astype(np.float32)


def _subsample(array, limit=2_000_000):
    """A strided view of at most ~`limit` voxels: percentiles of a big volume without sorting all of it."""
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // limit)]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The grey level that best splits `values` into two classes (Otsu 1979: most between-class variance)."""
    counts, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)
    weight_high = weight_low[-1] + counts[-1] - weight_low
    mass_low = np.cumsum(counts * centres)[:-1]
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] + counts[-1] * centres[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1 + int(np.argmax(between))])


def _fit_mr(sample: np.ndarray) -> dict | None:
    """Background level -> -1, median of the voxels above the Otsu threshold -> MR_FOREGROUND_MEDIAN_UNIT;
    None when the volume has no foreground to speak of (constant, or a few hot voxels)."""
    low, high = np.percentile(sample, PERCENTILES)
    # Otsu on log intensity, between the percentiles: a thick bright fat layer must not take the place of
    # the head against the background, nor a few hot voxels.
    offset = 0.01 * (high - low) + 1e-12
    threshold = low - offset + math.exp(otsu_threshold(np.log(np.clip(sample, low, high) - low + offset)))
    foreground = sample[sample > threshold]
    if foreground.size < max(16, sample.size // 1000):
        return None
    median, low = float(np.median(foreground)), float(low)
    if median <= low:
        return None
    high = low + (median - low) * 2.0 / (1.0 + MR_FOREGROUND_MEDIAN_UNIT)
    return {"method": "foreground_median", "low": low, "high": high, "foreground_threshold": threshold,
            "foreground_median": median, "foreground_fraction": round(foreground.size / sample.size, 4),
            "landmarks": [float(v) for v in np.percentile(foreground, MR_LANDMARK_PERCENTILES)]}


def fit_normalisation(array: np.ndarray, modality: str, dicom_tags=None) -> dict:
    """How to map this volume to [-1, 1], as a JSON-able record (e.g. {"method": "suv", ...})."""
    if modality == "CT":
        return {"method": "ct_hu_piecewise", "knots_hu": list(CT_KNOTS_HU), "knots_unit": list(CT_KNOTS_UNIT)}
    why_not = None
    if modality == "MR":
        record = _fit_mr(_subsample(array))
        if record is not None:
            return record
        why_not = "no foreground above the Otsu threshold"
    if modality == "PT":
        factor, why_not = suv_factor(dicom_tags) if dicom_tags else (None, "no DICOM tags")
        if factor is not None:
            return {"method": "suv", "factor": factor, "low": SUV_RANGE[0], "high": SUV_RANGE[1]}
    low, high = np.percentile(_subsample(array), PERCENTILES)
    record = {"method": "percentile", "percentiles": list(PERCENTILES), "low": float(low), "high": float(high)}
    if why_not:
        record["foreground_median_unavailable" if modality == "MR" else "suv_unavailable"] = why_not
    return record


def apply_normalisation(array: np.ndarray, record: dict) -> np.ndarray:
    """Apply a record from `fit_normalisation` or `standardise_record` (to a whole volume or a chunk of its
    slices)."""
    if record["method"] in ("ct_hu", "ct_hu_piecewise"):
        return hu_to_unit(array.astype(np.float32), record).astype(np.float32, copy=False)
    if record["method"] == "suv":
        return _linear(array * record["factor"], record["low"], record["high"])
    if "standardisation" not in record:
        return _linear(array, record["low"], record["high"])
    # standardised before the clip, so that the tissue above the two-point map's top (fat) keeps its landmarks
    unit = _linear(array, record["low"], record["high"], clip=False)
    return np.asarray(apply_standardisation(unit, record), np.float32)


def _unit_landmarks(record: dict) -> np.ndarray:
    """The record's foreground landmarks in network units, nudged apart so that the map through them is
    strictly increasing (a volume with few grey levels has equal percentiles)."""
    low, high = record["low"], record["high"]
    units = np.asarray(record["landmarks"], np.float64) * (2.0 / (high - low)) - (2.0 * low / (high - low) + 1.0)
    units = np.maximum(units, -1.0 + 1e-3)
    for i in range(1, len(units)):
        units[i] = max(units[i], units[i - 1] + 1e-3)
    return units


def learn_standard(records: list) -> list | None:
    """The standard landmarks (network units): the mean over the training volumes' records that have
    landmarks; None when none has (PET, MR without a foreground)."""
    landmarks = [_unit_landmarks(r) for r in records if "landmarks" in r]
    if not landmarks:
        return None
    return [float(v) for v in np.mean(landmarks, axis=0)]


def bend_standard(standard: list, gamma: float) -> list:
    """The standard under a gamma curve on [-1, 1] (2 ((u + 1) / 2) ** gamma - 1): the same landmarks in the
    same order, a brighter (gamma < 1) or darker (> 1) contrast between -1 and 1. Training with each MR volume
    mapped onto a bent standard of its own keeps some of the contrast variety that the standard takes away."""
    return [float(2.0 * ((u + 1.0) / 2.0) ** gamma - 1.0) for u in standard]


def bundle_standard(normalisation: dict) -> list | None:
    """The MR standard a bundle's header keeps (normalisation.source.standard), checked; None without one
    (PET, and bundles written before it)."""
    source = normalisation.get("source") if isinstance(normalisation, dict) else None
    standard = source.get("standard") if isinstance(source, dict) else None
    if standard is None:
        return None
    if not isinstance(standard, dict) or standard.get("percentiles") != list(MR_LANDMARK_PERCENTILES):
        raise ValueError(f"the MR standard's landmarks must be the percentiles {list(MR_LANDMARK_PERCENTILES)}")
    unit = standard.get("unit")
    if (not isinstance(unit, list) or len(unit) != len(MR_LANDMARK_PERCENTILES)
            or not all(type(v) in (int, float) and math.isfinite(v) for v in unit)
            or any(b <= a for a, b in zip(unit, unit[1:]))):
        raise ValueError(f"the MR standard needs {len(MR_LANDMARK_PERCENTILES)} finite, rising unit values")
    return [float(v) for v in unit]


def standardise_record(record: dict, standard) -> dict:
    """The record, extended by the piecewise-linear map (in network units) from this volume's landmarks to
    `standard`; unchanged when there is no standard or the record has no landmarks. Above the top landmark
    the last segment's slope goes on (bright fat, vessels), up to the clip at 1."""
    if not standard or "landmarks" not in record:
        return record
    source, target = _unit_landmarks(record), np.asarray(standard, np.float64)
    if len(source) != len(target):
        raise ValueError(f"the MR standard has {len(target)} landmarks; this volume {len(source)}")
    slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    # a last knot far out: _interpolate holds its value beyond the knots
    from_unit = [-1.0, *source, source[-1] + 1000.0]
    to_unit = [-1.0, *target, target[-1] + 1000.0 * slope]
    return {**record, "standardisation": {"from_unit": [float(v) for v in from_unit],
                                          "to_unit": [float(v) for v in to_unit]}}


def fit_source_normalisation(array: np.ndarray, header: dict, dicom_tags=None) -> dict:
    """fit_normalisation for a volume a bundle translates, mapped to the bundle's MR standard if it has one."""
    record = fit_normalisation(array, header["source_modality"], dicom_tags)
    return standardise_record(record, bundle_standard(header["normalisation"]))


def apply_standardisation(unit, record: dict):
    """Network units before the clip -> standardised and clipped to [-1, 1] by the record's map (only the
    clip without one); numpy arrays and torch tensors."""
    knots = record.get("standardisation")
    if knots is not None:
        unit = _interpolate(unit, knots["from_unit"], knots["to_unit"])
    return unit.clip(-1.0, 1.0)


def _interpolate(x, xs, ys):
    """Piecewise linear through the knots (xs rising), held outside them: np.interp for numpy arrays, the
    same by bucketize for torch tensors (a few passes over a full-resolution batch, not a few per knot)."""
    if isinstance(x, np.ndarray):
        return np.interp(x, xs, ys).astype(np.float32)
    import torch
    knots_x, knots_y = (torch.tensor(k, dtype=torch.float64) for k in (xs, ys))
    slopes = (knots_y[1:] - knots_y[:-1]) / (knots_x[1:] - knots_x[:-1])
    intercepts = knots_y[:-1] - slopes * knots_x[:-1]   # each segment as intercept + slope * x
    segment = torch.bucketize(x, knots_x[1:-1].to(x.dtype).to(x.device))
    slopes, intercepts = (v.to(x.dtype).to(x.device) for v in (slopes, intercepts))
    return torch.addcmul(intercepts[segment], slopes[segment], x.clamp(xs[0], xs[-1]))


def normalise(array: np.ndarray, modality: str, dicom_tags=None):
    """(array in [-1, 1], record of how it was done)."""
    record = fit_normalisation(array, modality, dicom_tags)
    return apply_normalisation(array, record), record
