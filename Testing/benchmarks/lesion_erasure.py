"""Does a benchmark predictor see the lesions, or only the slices where lesions can be?

    python -m Testing.benchmarks.lesion_erasure COHORT_DIR MODEL [MODEL ...] [--json OUT]

The real-image benchmark's lesions are simulated, so each real-CT test slice with a lesion has a counterfactual
twin: the same slice with the lesion erased (its voxels set to the mean of a 1-3 voxel ring around it). MODEL
is a saved bundle (its predictor) or a training checkpoint (``PATH.ckpt``: its predictor;
``PATH.ckpt#guide_predictor``: DUIIT's CT-only guide). For each model, on the cohort's CT test split:

  AUC             lesion slices against lesion-free slices (the benchmark's slice AUC)
  erased          the same, every lesion erased: what the slice's anatomy alone gives
  inverted        the same, every lesion mirrored about its ring's mean (hypodense instead of hyperdense)
  twin AUC        lesion slices against their own erased twins: 0.5 when the predictor does not see lesions
  pair win        the share of lesion slices that score above their own erased twin (ties one half); unlike
                  the twin AUC it never compares slices of different levels

and, once per cohort, the AUC of a model-free score: the slice's area of brain-like CT (5-60 HU), since the
lesions are placed inside the brain, away from the skull.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("kept", "erased", "inverted")
BRAIN_HU = (5.0, 60.0)


def edit_lesions(hu: np.ndarray, lesion: np.ndarray, variant: str) -> np.ndarray:
    """A copy of the (z, y, x) HU volume with each slice's lesion voxels set to the mean of the ring around
    them ("erased") or mirrored about that mean ("inverted"); "kept" is the volume unchanged."""
    from duiit.lesion_inversion import ring
    edited = hu.astype(np.float32, copy=True)
    if variant == "kept" or not lesion.any():
        return edited
    around = ring(lesion) & (hu > -200)
    for z in np.flatnonzero(lesion.reshape(len(hu), -1).any(axis=1)):
        inside = lesion[z]
        level = float((edited[z][around[z]] if around[z].any() else edited[z][inside]).mean())
        edited[z][inside] = level if variant == "erased" else 2.0 * level - edited[z][inside]
    return edited


def ct_test_cases(cohort: Path) -> list:
    from duiit.manifest import read_manifest
    cases = [c for c in read_manifest(cohort / "manifest.csv") if c.modality == "CT" and c.split == "test"]
    if not cases:
        raise SystemExit(f"lesion_erasure: {cohort / 'manifest.csv'} has no CT test cases (not a benchmark cohort?)")
    return cases


def edited_test_split(cohort: Path, variant: str, image_size: int, label_names: list, scratch: Path):
    """(network-unit slices, slice labels) of the CT test split with its lesions edited, loaded as the
    benchmark loads them (duiit.cohort.load_case)."""
    import SimpleITK as sitk
    import torch
    from duiit.cohort import load_case
    images, labels = [], []
    for case in ct_test_cases(cohort):
        if variant != "kept" and case.mask is not None:
            image = sitk.ReadImage(str(case.path))
            lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))) > 0
            edited = sitk.GetImageFromArray(edit_lesions(sitk.GetArrayFromImage(image), lesion, variant))
            edited.CopyInformation(image)
            path = scratch / variant / case.path.name
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(edited, str(path))
            case = dataclasses.replace(case, path=path)
        slices, slice_labels, _, _ = load_case(case, image_size, "classification", label_names)
        images.append(slices)
        labels.append(slice_labels)
    return torch.cat(images), torch.cat(labels).numpy()


def anatomy_auc(cohort: Path) -> float | None:
    """AUC of the slice's brain-like area (BRAIN_HU) alone, over the test split's slices inside the head."""
    import SimpleITK as sitk
    areas, positive = [], []
    for case in ct_test_cases(cohort):
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(case.path)))
        lesion = (sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))) > 0 if case.mask is not None
                  else np.zeros(hu.shape, bool))
        brain = ((hu > BRAIN_HU[0]) & (hu < BRAIN_HU[1])).reshape(len(hu), -1).sum(axis=1)
        keep = (hu > -500).reshape(len(hu), -1).any(axis=1)
        areas.extend(brain[keep].astype(float))
        positive.extend(lesion.reshape(len(hu), -1).any(axis=1)[keep])
    return _auc(areas, positive)


def load_predictor(spec: str, outputs: int):
    """(predictor, image size) from a bundle, or from a checkpoint's module ("PATH.ckpt#name")."""
    import torch
    from duiit.bundle import load_bundle
    from duiit.checkpoint import KIND
    from duiit.networks import NetworkConfig, SlicePredictor
    path, _, module = spec.partition("#")
    if not path.endswith(".ckpt"):
        bundle = load_bundle(path)
        return bundle.predictor(), bundle.network.image_size
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise SystemExit(f"lesion_erasure: {path} is not a DUIIT checkpoint")
    name = module or "predictor"
    if name not in state["modules"]:
        raise SystemExit(f"lesion_erasure: {path} has no module {name!r} (it has {', '.join(state['modules'])})")
    weights = state["modules"][name]
    network = NetworkConfig.from_dict(state["network"])
    predictor = SlicePredictor(network, outputs)
    predictor.load_state_dict(weights)
    return predictor, network.image_size


def _auc(scores, positive) -> float | None:
    """auc_binary, None (not NaN) when a class is missing, so that the JSON stays JSON."""
    from duiit.metrics import auc_binary
    value = auc_binary(np.asarray(scores), np.asarray(positive, bool))
    return None if np.isnan(value) else value


def pair_win(kept: np.ndarray, erased: np.ndarray) -> float | None:
    """The share of slices scoring above their own erased twin, ties one half; None without slices."""
    if len(kept) == 0:
        return None
    return float(np.mean((kept > erased) + 0.5 * (kept == erased)))


def visibility(predictor, sets: dict, lesion: int, device="cpu") -> dict:
    """{variant: slice AUC, "twin_auc", "twin_pair_win", "lesion_log_odds"} of a predictor (on `device`) over
    `sets`, which hold "kept" and "erased" (and any other variant) as (images, slice labels)."""
    from Testing.benchmarks.real_images import lesion_scores
    scores = {v: lesion_scores(predictor, images, lesion, device) for v, (images, _) in sets.items()}
    positive = sets["kept"][1] == lesion
    out = {v: _auc(s, positive) for v, s in scores.items()}
    twins = np.concatenate([scores["kept"][positive], scores["erased"][positive]])
    out["twin_auc"] = _auc(twins, np.arange(len(twins)) < positive.sum())
    out["twin_pair_win"] = pair_win(scores["kept"][positive], scores["erased"][positive])
    out["lesion_log_odds"] = {v: float(s[positive].mean()) if positive.any() else None for v, s in scores.items()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.lesion_erasure", description=__doc__.split("\n")[0])
    p.add_argument("cohort", type=Path, help="the benchmark cohort folder (with manifest.csv)")
    p.add_argument("models", nargs="+", help="bundles, or checkpoints (PATH.ckpt or PATH.ckpt#guide_predictor)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    import torch
    from duiit.cohort import label_names_for
    from duiit.manifest import read_manifest
    torch.set_num_threads(1)
    label_names = label_names_for([c for c in read_manifest(args.cohort / "manifest.csv") if c.labelled],
                                  "classification")
    lesion = label_names.index("lesion")
    figures = {"cohort": str(args.cohort), "anatomy_auc": anatomy_auc(args.cohort), "models": {}}
    print(f"brain-like area alone ({BRAIN_HU[0]:g}-{BRAIN_HU[1]:g} HU): AUC {_fmt(figures['anatomy_auc'])}")
    print("model | AUC | lesions erased | lesions inverted | twin AUC (with vs without its lesion) | pair win")
    sets_by_size = {}
    with tempfile.TemporaryDirectory(prefix="duiit-erasure-") as scratch:
        for spec in args.models:
            predictor, size = load_predictor(spec, len(label_names))
            if size not in sets_by_size:
                sets_by_size[size] = {v: edited_test_split(args.cohort, v, size, label_names,
                                                           Path(scratch) / str(size)) for v in VARIANTS}
            row = figures["models"][spec] = visibility(predictor, sets_by_size[size], lesion)
            print(f"{spec} | {_fmt(row['kept'])} | {_fmt(row['erased'])} | {_fmt(row['inverted'])} | "
                  f"{_fmt(row['twin_auc'])} | {_fmt(row['twin_pair_win'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
