"""Shared pieces of the benchmarks: machine description, synthetic bundles and volumes, the plain
reference translation (one slice at a time, fp32, autograd on, no batching), timing helpers."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

RESULTS = Path(__file__).resolve().parent / "results"
# NIfTI files read by SimpleITK usually carry this direction (RAS storage): the translate path then
# reads the input through a flipped view, which is the general (not the fastest) case.
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def machine(device: torch.device | None = None) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
            "SimpleITK": sitk.Version.VersionString(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "platform": platform.platform()}
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def command_line() -> str:
    return " ".join(["python", "-m", "Testing.benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]])


def make_bundle(path, preset: str = "small", seed: int = 0, task: str = "classification", **overrides):
    """A bundle with freshly initialised networks (N(0, 0.02), as training starts), loaded back."""
    from duiit.bundle import load_bundle, save_bundle
    from duiit.normalisation import fit_normalisation
    from duiit.networks import PRESETS, CycleTranslator, NetworkConfig, SlicePredictor, init_weights
    config = NetworkConfig(**{**PRESETS[preset].to_dict(), **overrides})
    torch.manual_seed(seed)
    translator, predictor = CycleTranslator(config), SlicePredictor(config, 2 if task == "classification" else 1)
    generator = torch.Generator().manual_seed(seed)
    init_weights(translator, generator)
    init_weights(predictor, generator)
    header = {"source_modality": "MR", "target_modality": "CT", "task": task,
              "label_names": ["none", "lesion"] if task == "classification" else [],
              "regression_scale": [50.0, 10.0], "method": "duiit", "network": config.to_dict(),
              "normalisation": {"target": fit_normalisation(np.zeros(1), "CT"), "source": {"method": "percentile"}},
              "benchmark": f"untrained {preset} networks, seed {seed}"}
    save_bundle(path, header, {"translator": translator, "predictor": predictor})
    return load_bundle(path)


def with_mr_standard(bundle, image: sitk.Image):
    """The bundle with an MR histogram standard in its header, as one trained on MR from two scanners keeps:
    that of `image` and of a copy with a brighter scalp against the brain, so the map is not the identity."""
    from duiit.bundle import Bundle
    from duiit.normalisation import MR_LANDMARK_PERCENTILES, fit_normalisation, learn_standard
    head = sitk.GetArrayFromImage(image).astype(np.float32)
    records = [fit_normalisation(head, "MR"), fit_normalisation(np.where(head > 600, head * 1.6, head), "MR")]
    standard = {"percentiles": list(MR_LANDMARK_PERCENTILES), "unit": learn_standard(records)}
    normalisation = bundle.header["normalisation"]
    source = {**normalisation.get("source", {}), "standard": standard}
    return Bundle(bundle.path, {**bundle.header, "normalisation": {**normalisation, "source": source}},
                  bundle.tensors)


def head_volume(shape, dtype=np.int16, seed=0, direction=RAS_DIRECTION, spacing=None, slab=16) -> sitk.Image:
    """A T1-like synthetic head (scalp, skull, brain, ventricles, noise) of `shape` (z, y, x), built slab
    by slab straight into the image, so that making a big one costs no more than the image itself."""
    depth, rows, cols = shape
    image = sitk.Image((cols, rows, depth), sitk.sitkInt16 if dtype == np.int16 else sitk.sitkFloat32)
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        z = np.linspace(-1, 1, depth)[start:stop, None, None]
        r = lambda a, b, c: (z / a) ** 2 + (y / b) ** 2 + (x / c) ** 2 <= 1.0  # noqa: E731
        block = np.zeros((stop - start, rows, cols), dtype=np.float32)
        block[r(0.95, 0.85, 0.75)] = 700
        block[r(0.9, 0.8, 0.7)] = 150
        block[r(0.82, 0.7, 0.6)] = 450
        ventricles = ((z / 0.3) ** 2 + ((y + 0.05) / 0.25) ** 2 + ((np.abs(x) - 0.12) / 0.07) ** 2) <= 1.0
        block[ventricles] = 120
        block += rng.normal(0, 25, block.shape).astype(np.float32)
        block *= (1.0 + 0.15 * y + 0.1 * x).astype(np.float32)
        piece = sitk.GetImageFromArray(block.astype(dtype), isVector=False)
        image[:, :, start:stop] = piece
    image.SetSpacing(spacing or (240.0 / cols, 240.0 / rows, 1.0))
    image.SetDirection(direction)
    image.SetOrigin((120.0, 120.0, -depth / 2.0))
    return image


def reference_translate(bundle, image: sitk.Image, predict: bool = True, device="cpu"):
    """The plain way, as a first implementation would do it: reorient and normalise the whole volume, then
    one slice at a time through G in fp32 with autograd on, resize back, HU, reorient back; the predictor
    one informative slice at a time. Returns (ct image, prediction dict or None). `device`: where the
    networks run (on CUDA in strict fp32, no TF32, as duiit's own default)."""
    from duiit.device import cuda_fp32_math
    with cuda_fp32_math(tf32=False):
        return _reference_translate(bundle, image, predict, torch.device(device))


def _reference_translate(bundle, image, predict, device):
    from duiit.normalisation import apply_normalisation, fit_source_normalisation, unit_to_hu
    from duiit.prediction import prediction_dict
    from duiit.slices import SquareFit, from_axial, in_plane_spacing, informative, to_axial
    header = bundle.header
    translator, predictor = bundle.translator().to(device), bundle.predictor().to(device)
    size = bundle.network.image_size
    axial = to_axial(image)
    source = sitk.GetArrayFromImage(axial)
    unit = apply_normalisation(source, fit_source_normalisation(source, header))
    depth = unit.shape[0]
    fit = SquareFit.of(unit.shape[1:], in_plane_spacing(axial), size)
    ct = np.empty(unit.shape, dtype=np.float32)
    fakes = []
    for k in range(depth):
        fake = translator.to_target(fit.to_network(torch.from_numpy(unit[k:k + 1])[:, None]).to(device))
        ct[k] = fit.from_network(unit_to_hu(fake, header["normalisation"]["target"]))[0, 0].detach().cpu().numpy()
        fakes.append(fake.detach())
    out = sitk.GetImageFromArray(ct)
    out.CopyInformation(axial)
    ct_image = from_axial(out, image)
    if not predict:
        return ct_image, None
    slices = torch.cat(fakes)
    keep = torch.nonzero(informative(slices))[:, 0].tolist()
    scale = header.get("regression_scale", [0.0, 1.0])
    if header["task"] == "classification":
        outputs = np.stack([torch.softmax(predictor(slices[k:k + 1]), dim=1)[0].detach().cpu().numpy()
                            for k in keep])
    else:
        outputs = np.array([float(predictor(slices[k:k + 1])[0, 0].detach()) * scale[1] + scale[0] for k in keep])
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    index = (lambda n: depth - 1 - n) if orientation[2] == "I" else (lambda n: n)
    return ct_image, prediction_dict(outputs, header["task"], header.get("label_names") or [],
                                     [index(k) for k in keep])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: dict, repeats: int, warmup: int = 1) -> dict:
    """name -> list of seconds; the variants run side by side, round by round (order rotating), so machine
    noise hits them alike."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(variants[name]))
    return times


def median(values) -> float:
    return float(statistics.median(values))


def write_results(stem: str, markdown: str, data: dict, folder=None) -> tuple:
    folder = Path(folder) if folder else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / f"{stem}.md", folder / f"{stem}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return md, js
