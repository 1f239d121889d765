"""Where does each of G's losses push a translated lesion, and what does G make of the lesion?

    python -m Testing.benchmarks.guidance_push COHORT_DIR CHECKPOINT [CHECKPOINT ...] [--json OUT]

CHECKPOINT is a real-image benchmark training checkpoint (`--checkpoint-every`, under WORK/checkpoints) of a
translating method. On every source (MR) training slice with a simulated lesion, x, the checkpoint's translator
(the one being trained, not its moving average) gives y = G(x), and each term of G's loss is differentiated
with respect to y, weighted as at the end of training:

  gan     D_CT's least-squares score of y as real
  cycle   lambda_cycle * |F(y) - x|
  guide   lambda_task * C's cross-entropy of y as "lesion" (the target guide if the checkpoint has one, else the
          joint predictor; a cyclegan checkpoint has no guide term)

For each term the push is -dL/dy (where gradient descent on y would move it). Reported per term, summed over
the lesion slices:

  lesion - ring   mean push inside the lesion minus in the ring 1-3 px around it, in network units: > 0 makes
                  the lesion brighter against its surroundings (CT lesions here are hyperdense); also the
                  share of slices on which it is > 0
  focus           the share of the push's energy (sum of squares) on the lesion, over the lesion's share of the
                  head: 1 when the term does not single the lesion out, > 1 when it concentrates there

and, for the translation itself, the lesion's contrast in HU against its ring, and against its twin (the
same slice of the lesion-free twin, translated: what G draws because of the lesion, nothing else). Networks
run in eval mode (batch norm by its running statistics), one slice at a time in effect.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TERMS = ("gan", "cycle", "guide")
CONTRAST_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def lesion_pairs(cohort: Path, image_size: int, mr_standard: bool):
    """(x, twin, lesion, ring, head) over the MR training slices with a lesion: network-unit slices (N, 1, S, S)
    of each lesion case and of its twin, and boolean masks of its lesion, the ring around it and the head."""
    import torch
    from duiit.cohort import axial_mask, learn_source_standard, read_case
    from duiit.erased_lesions import head_ring
    from duiit.manifest import read_manifest
    from duiit.normalisation import apply_normalisation
    from duiit.slices import FOREGROUND_LEVEL, volume_to_slices
    cases = read_manifest(cohort / "manifest.csv")
    source = [c for c in cases if c.modality == "MR" and (c.split or "train") == "train"]
    by_patient = {c.patient_id: c for c in source}
    standard = learn_source_standard(source) if mr_standard else None

    def slices_of(case):
        image, array, spacing, record = read_case(case, standard)
        return image, spacing, volume_to_slices(apply_normalisation(array, record), image_size, spacing)

    parts = []
    for case in source:
        twin = by_patient.get(f"{case.patient_id}-twin")
        if case.mask is None or twin is None:
            continue
        image, spacing, x = slices_of(case)
        lesion = volume_to_slices(axial_mask(case, image).astype(np.float32), image_size, spacing) > 0.5
        present = lesion.flatten(1).any(dim=1)
        if not present.any():
            continue
        twin_x = slices_of(twin)[2]
        x, twin_x, lesion = x[present], twin_x[present], lesion[present]
        head = x > FOREGROUND_LEVEL
        ring = head_ring(x, lesion)
        parts.append((x, twin_x, lesion, ring, head))
    if not parts:
        raise SystemExit(f"guidance_push: {cohort / 'manifest.csv'} has no MR training lesion case with a twin "
                         "(build the cohort with --twins)")
    return tuple(torch.cat([p[i] for p in parts]) for i in range(5))


def load_checkpoint_networks(path: Path):
    """(options, translator, D_CT, guide or None, image size, step) of a benchmark checkpoint, in eval mode."""
    import torch
    from duiit.checkpoint import KIND
    from duiit.networks import CycleTranslator, Discriminators, NetworkConfig, SlicePredictor
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise SystemExit(f"guidance_push: {path} is not a DUIIT checkpoint")
    modules = state["modules"]
    if "translator" not in modules:
        raise SystemExit(f"guidance_push: {path} has no translator (method {state['options'].get('method')})")
    network = NetworkConfig.from_dict(state["network"])
    translator = CycleTranslator(network)
    translator.load_state_dict(modules["translator"])
    discriminators = Discriminators(network)
    discriminators.load_state_dict(modules["discriminators"])
    guide = None
    options = state["options"]
    if options["method"] == "duiit" and options.get("guidance", True):
        name = "guide_predictor" if "guide_predictor" in modules else "predictor"
        guide = SlicePredictor(network, int(modules[name]["head.2.weight"].shape[0]))  # head: pool, flatten, linear
        guide.load_state_dict(modules[name])
    for module in (translator, discriminators, guide):
        if module is not None:
            module.eval()
    return options, translator, discriminators.target, guide, network.image_size, int(state["step"])


def pushes(options: dict, translator, d_target, guide, x, lesion_label: int):
    """({term: -dL/dy}, y) for y = G(x), each term per slice as G's loss has it, weighted as in training."""
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        y = translator.to_target(x)
    y.requires_grad_(True)
    losses = {"gan": ((d_target(y) - 1.0) ** 2).flatten(1).mean(dim=1).sum(),
              "cycle": options["lambda_cycle"] * (translator.to_source(y) - x).abs().flatten(1).mean(dim=1).sum()}
    if guide is not None:
        labels = torch.full((len(x),), lesion_label, dtype=torch.long)
        losses["guide"] = options["lambda_task"] * F.cross_entropy(guide(y), labels, reduction="none").sum()
    return {term: -torch.autograd.grad(loss, y)[0] for term, loss in losses.items()}, y.detach()


def push_figures(push, lesion, ring, head) -> dict:
    push, lesion, ring, head = (t.double() for t in (push, lesion, ring, head))
    inside = (push * lesion).sum() / lesion.sum()
    around = (push * ring).sum() / ring.sum()
    per_slice = ((push * lesion).flatten(1).sum(1) / lesion.flatten(1).sum(1)
                 - (push * ring).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp(min=1))
    energy = push ** 2
    share = (energy * lesion).sum() / (energy * head).sum()
    return {"lesion_minus_ring": float(inside - around), "lesion_mean": float(inside),
            "brightening_slices": float((per_slice > 0).double().mean()),
            "focus": float(share / (lesion.sum() / head.sum())), "rms": float(energy.mean().sqrt())}


def guide_contrast_response(guide, y, lesion, ring, lesion_label: int) -> dict:
    """{k: the guide's mean lesion log-odds on y with each lesion's contrast against its ring's mean scaled by
    k}: where along the lesion's contrast the guide's optimum lies (k = 0: the lesion erased)."""
    import torch
    from Testing.benchmarks.real_images import lesion_scores
    ring_level = (y * ring).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp(min=1)
    level = ring_level[:, None, None, None].expand_as(y)
    response = {}
    for k in CONTRAST_SCALES:
        scaled = torch.where(lesion, level + k * (y - level), y)
        response[f"{k:g}"] = float(lesion_scores(guide, scaled, lesion_label, "cpu").mean())
    return response


def lesion_hu_minus(y, lesion, reference_hu) -> float:
    """Mean HU of translation y inside the lesion minus the mean of `reference_hu` (HU voxels)."""
    from duiit.normalisation import unit_to_hu
    return float(unit_to_hu(y.double())[lesion].mean() - reference_hu.mean())


def measure(cohort: Path, checkpoint: Path, pairs_by_size: dict) -> dict:
    import torch
    from duiit.cohort import label_names_for
    from duiit.manifest import read_manifest
    from duiit.normalisation import unit_to_hu
    from Testing.benchmarks.real_images import lesion_scores
    options, translator, d_target, guide, image_size, step = load_checkpoint_networks(checkpoint)
    key = (image_size, options.get("mr_standard", True))
    if key not in pairs_by_size:
        pairs_by_size[key] = lesion_pairs(cohort, *key)
    x, twin_x, lesion, ring, head = pairs_by_size[key]
    label_names = label_names_for([c for c in read_manifest(cohort / "manifest.csv") if c.labelled],
                                  "classification")
    lesion_label = label_names.index("lesion")
    term_pushes, y = pushes(options, translator, d_target, guide, x.float(), lesion_label)
    term_pushes["total"] = sum(term_pushes.values())
    with torch.no_grad():
        twin_y = translator.to_target(twin_x.float())
    return {"method": options["method"], "step": step, "slices": len(x),
            "source_contrast_vs_ring": float(x.double()[lesion].mean() - x.double()[ring].mean()),
            "translated_contrast_hu_vs_ring": lesion_hu_minus(y, lesion, unit_to_hu(y.double())[ring]),
            "translated_contrast_hu_vs_twin": lesion_hu_minus(y, lesion, unit_to_hu(twin_y.double())[lesion]),
            "push": {term: push_figures(p, lesion, ring, head) for term, p in term_pushes.items()},
            "guide_log_odds_by_contrast": (guide_contrast_response(guide, y, lesion, ring, lesion_label)
                                           if guide else None),
            "guide_log_odds_twin": float(lesion_scores(guide, twin_y, lesion_label, "cpu").mean()) if guide else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.guidance_push", description=__doc__.split("\n")[0])
    p.add_argument("cohort", type=Path, help="the benchmark cohort folder (built with --twins)")
    p.add_argument("checkpoints", nargs="+", type=Path, help="training checkpoints of cyclegan or duiit")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    figures, pairs_by_size = {"cohort": str(args.cohort), "checkpoints": {}}, {}
    print("checkpoint | step | lesion HU vs ring / vs twin | push lesion-ring (focus): "
          + " | ".join(TERMS + ("total",)))
    for checkpoint in args.checkpoints:
        row = figures["checkpoints"][str(checkpoint)] = measure(args.cohort, checkpoint, pairs_by_size)
        terms = " | ".join(f"{row['push'][t]['lesion_minus_ring']:+.2e} ({row['push'][t]['focus']:.2f})"
                           if t in row["push"] else "-" for t in TERMS + ("total",))
        print(f"{checkpoint.name} | {row['step']} | {row['translated_contrast_hu_vs_ring']:+.1f} / "
              f"{row['translated_contrast_hu_vs_twin']:+.1f} | {terms}", flush=True)
        if row["guide_log_odds_by_contrast"]:
            print("  guide's lesion log-odds, the translated lesions' contrast scaled by k: "
                  + ", ".join(f"k={k} {v:+.2f}" for k, v in row["guide_log_odds_by_contrast"].items())
                  + f"; on the translated twins {row['guide_log_odds_twin']:+.2f}")
    if args.json:
        from duiit.atomic import atomic_path
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
