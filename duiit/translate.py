"""Translating a whole source volume (MR/PT) to a CT-like volume in HU on the input's exact grid.

Slices go through the network in batches; each batch is normalised, resized, translated, resized back
and written into one preallocated output, so memory stays at about the volume's size plus a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from .bundle import Bundle
from .device import autocast, resolve_device
from .errors import DuiitError
from .normalisation import apply_normalisation, fit_normalisation, hu_to_unit, unit_to_hu
from .prediction import prediction_dict, run_predictor
from .slices import from_axial, informative, resize, to_axial, volume_to_slices

BATCH_SLICES = 16


@dataclass
class Translation:
    ct: sitk.Image                 # float32 HU, same size/spacing/origin/direction as the input
    error_map: sitk.Image | None   # |F(G(s)) - s| in normalised source units (0..2): where not to trust G
    prediction: dict
    device: str
    normalisation: dict


def slice_index_map(image: sitk.Image, depth: int):
    """Axial (LPS, inferior to superior) slice number -> the input's k index when its k axis is axial."""
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    if orientation[2] == "S":
        return lambda n: n
    if orientation[2] == "I":
        return lambda n: depth - 1 - n
    return lambda n: n


def translate_volume(bundle: Bundle, image: sitk.Image, device="auto", series_tags=None,
                     with_error_map: bool = False, batch_size: int = BATCH_SLICES, progress=None) -> Translation:
    device, _ = resolve_device(device) if isinstance(device, str) else (device, "")
    header = bundle.header
    translator = bundle.translator().to(device)
    predictor = bundle.predictor().to(device)
    size = bundle.network.image_size
    axial = to_axial(image)
    source = sitk.GetArrayViewFromImage(axial)
    record = fit_normalisation(source, header["source_modality"], series_tags)
    depth, height, width = source.shape
    ct = np.empty(source.shape, dtype=np.float32)
    error = np.empty(source.shape, dtype=np.float32) if with_error_map else None
    small_ct = []
    with torch.inference_mode():
        for start in range(0, depth, batch_size):
            stop = min(start + batch_size, depth)
            batch = volume_to_slices(apply_normalisation(source[start:stop], record), size).to(device)
            with autocast(device):
                fake = translator.to_target(batch).float()
                if with_error_map:
                    reconstruction = translator.to_source(fake).float()
            small_ct.append(fake.cpu())
            ct[start:stop] = unit_to_hu(resize(fake, (height, width))[:, 0]).cpu().numpy()
            if with_error_map:
                error[start:stop] = resize((reconstruction - batch).abs(), (height, width))[:, 0].cpu().numpy()
            if progress:
                progress(stop, depth)
    fake_slices = torch.cat(small_ct)
    prediction = _predict(bundle, predictor, fake_slices, image, device)
    return Translation(ct=_on_input_grid(ct, axial, image), device=str(device), normalisation=record,
                       error_map=_on_input_grid(error, axial, image) if with_error_map else None,
                       prediction=prediction)


def _on_input_grid(array: np.ndarray, axial: sitk.Image, original: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array, isVector=False)
    out.CopyInformation(axial)
    return from_axial(out, original)


def _predict(bundle: Bundle, predictor, slices: torch.Tensor, image: sitk.Image, device) -> dict:
    header = bundle.header
    keep = informative(slices)
    scale = header.get("regression_scale", [0.0, 1.0])
    outputs = run_predictor(predictor, slices[keep], header["task"], scale, device)
    to_input = slice_index_map(image, slices.shape[0])
    indices = [to_input(int(n)) for n in torch.nonzero(keep)[:, 0]]
    return prediction_dict(outputs, header["task"], header.get("label_names") or [], indices)


def predict_volume(bundle: Bundle, ct_image: sitk.Image, device="auto") -> dict:
    """The predictor's outputs for a CT (or CT-like) volume in HU."""
    device, _ = resolve_device(device) if isinstance(device, str) else (device, "")
    if bundle.header.get("target_modality", "CT") != "CT":
        raise DuiitError(f"{bundle.path}: predicts {bundle.header['target_modality']}, not CT")
    predictor = bundle.predictor().to(device)
    axial = to_axial(ct_image)
    slices = volume_to_slices(hu_to_unit(sitk.GetArrayViewFromImage(axial).astype(np.float32)),
                              bundle.network.image_size)
    return _predict(bundle, predictor, slices, ct_image, device)
