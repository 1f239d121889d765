"""Intensity normalisation per modality to the networks' range [-1, 1], and back to HU for CT.

CT: fixed, invertible linear map of [-1024, 3071] HU. MR: robust per-volume percentiles.
PT: SUV (body weight) from DICOM tags when they allow it, a fixed SUV range then; percentiles otherwise.
The choice made for each volume is returned so it can be recorded in the bundle.
"""

import numpy as np

from .suv import suv_factor

CT_LOW_HU, CT_HIGH_HU = -1024.0, 3071.0
PERCENTILES = (0.5, 99.5)
SUV_RANGE = (0.0, 20.0)


def hu_to_unit(hu):
    """HU -> [-1, 1] (clipped); works on numpy arrays and torch tensors."""
    scaled = (hu - CT_LOW_HU) / (CT_HIGH_HU - CT_LOW_HU) * 2.0 - 1.0
    return scaled.clip(-1.0, 1.0)


def unit_to_hu(unit):
    return (unit + 1.0) * 0.5 * (CT_HIGH_HU - CT_LOW_HU) + CT_LOW_HU


def _linear(array, low, high):
    if high <= low:
        high = low + 1.0
    return (np.clip((array - low) / (high - low), 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def _subsample(array, limit=2_000_000):
    """A strided view of at most ~`limit` voxels: percentiles of a big volume without sorting all of it."""
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // limit)]


def fit_normalisation(array: np.ndarray, modality: str, dicom_tags=None) -> dict:
    """How to map this volume to [-1, 1], as a JSON-able record (e.g. {"method": "suv", ...})."""
    if modality == "CT":
        return {"method": "ct_hu", "low": CT_LOW_HU, "high": CT_HIGH_HU}
    why_not = None
    if modality == "PT":
        factor, why_not = suv_factor(dicom_tags) if dicom_tags else (None, "no DICOM tags")
        if factor is not None:
            return {"method": "suv", "factor": factor, "low": SUV_RANGE[0], "high": SUV_RANGE[1]}
    low, high = np.percentile(_subsample(array), PERCENTILES)
    record = {"method": "percentile", "percentiles": list(PERCENTILES), "low": float(low), "high": float(high)}
    if why_not:
        record["suv_unavailable"] = why_not
    return record


def apply_normalisation(array: np.ndarray, record: dict) -> np.ndarray:
    """Apply a record from `fit_normalisation` (to a whole volume or a chunk of its slices)."""
    if record["method"] == "ct_hu":
        return hu_to_unit(array.astype(np.float32))
    if record["method"] == "suv":
        return _linear(array * record["factor"], record["low"], record["high"])
    return _linear(array, record["low"], record["high"])


def normalise(array: np.ndarray, modality: str, dicom_tags=None):
    """(array in [-1, 1], record of how it was done)."""
    record = fit_normalisation(array, modality, dicom_tags)
    return apply_normalisation(array, record), record
