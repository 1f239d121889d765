"""Benchmark on real head images (issue 4): does guided translation (DUIIT) give a better CT predictor?

    python -m Testing.benchmarks.real_images [--quick] [--seeds 3] [--iterations N] [--out DIR]

One labelled head MR -> CT cohort is built from the real sample images (:mod:`duiit.head_cohort`; every CT
"patient" is an augmentation of ONE real CT, the MR patients are augmentations of 3 real T1 MRs (5 with
--mr-volumes; or T1s simulated from the CT with --mr-volumes simulated_t1), lesions are simulated), with few
labelled CT patients for training, the other CT patients for testing and many labelled MR patients. The same
cohort and split serve every method and seed. Per seed, each method trains the same predictor (same network,
image size, batch size and predictor iterations):

  target-only   C on the few real CT slices
  naive         C on real CT + untranslated (normalised) MR
  cyclegan      CycleGAN (N translator steps), then a fresh C on real CT + G(MR) (N predictor steps)
  duiit         joint: N steps of G/F/D + C, C's loss on G(MR) reaches G after a warm-up
  duiit-noguide (ablation, --ablation) the same with G(MR) detached before C (the authors' public code)
  duiit-fresh   (authors' protocol; skip with --no-fresh-predictor) a fresh C trained for N steps on real CT + G(MR)
                with the final DUIIT translator (Trainer's cyclegan second stage, its translator replaced)

Predictors are evaluated on the real-CT test split only: slice-level AUC (lesion vs none, ranked by the lesion
log-odds; also from the softmax probability, which ties when it saturates), accuracy (argmax), balanced
accuracy, and volume-level AUC, as mean +- sample std (ddof 1) over seeds.
Translation fidelity of the duiit and cyclegan translators: (a) unpaired, tissue HU statistics (air, soft
tissue, bone) of translated real-MR volumes vs the real CT test volumes, inside the head masks; (b) paired,
MAE (HU, inside the head), PSNR (4000 HU range) and SSIM against the real CT on the check set, whose MR is
SIMULATED from held-out real-CT augmentations; (c) diagnostic: lesion contrast (lesion minus a 1-3 voxel
ring around it, HU) in translated MR lesions vs real CT lesions, i.e. whether the translator keeps or
erases what the task needs.

Every invocation appends one run to ``OUT/real_images.json`` (partial results are written after each
training run) and regenerates ``OUT/real_images.md`` from all runs; text between ``<!-- analysis -->`` and
``<!-- /analysis -->`` in the markdown is kept. Nothing measured is overwritten. Every full block of fifty
runs is kept in a file of its own (``real_images-runs-001-050.json``, ...), so no file outgrows what git
should hold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from duiit.training_options import TrainingOptions  # noqa: E402 (after the path above)

DEFAULTS = TrainingOptions()  # the benchmark trains with duiit train's defaults unless told otherwise
RUN_ALL = {"forwards": ["--quick"]}  # for run_all (read from the source, not imported)
BASE_METHODS = ("target-only", "naive", "cyclegan", "duiit")
ABLATION = "duiit-noguide"
FRESH = "duiit-fresh"
TRANSLATING = ("cyclegan", "duiit", ABLATION)
AVERAGED_VIEWS = 8  # the final paired check is made again with the translation averaged over this many views
FULL_COHORT = {"n_ct_patients": 20, "ct_train_fraction": 0.15, "n_mr_patients": 18, "n_check": 3,
               "lesion_fraction": 0.6, "size": "tiny"}
QUICK_COHORT = {"n_ct_patients": 3, "ct_train_fraction": 0.15, "n_mr_patients": 3, "n_check": 1,
                "lesion_fraction": 0.6, "size": "tiny", "n_ct_unlabelled": 1}
RESULTS_NAME = "real_images"
ARCHIVE_BLOCK = 50  # runs per archived results file (runs 151-200, with per-volume detail: 1.6 MB)
ANALYSIS_START, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"
DEFAULT_OUT = ROOT / "Testing" / "benchmarks" / "results"
COHORT_RECORD = "benchmark_cohort.json"


class Unavailable(Exception):
    """The real sample images cannot be fetched here (the quick test skips on this)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# machine, cohort


def machine(device="cpu") -> dict:
    """common.machine() under the keys this benchmark's results have always used."""
    import torch
    from Testing.benchmarks.common import machine as describe
    info = describe()
    return {"cpu": info["cpu"], "cores": info["cpu_count"], "torch": info["torch"],
            "torch_threads": info["torch_threads"], "python": info["python"], "platform": info["platform"],
            "load_average_at_start": info.get("load_average"), "device": str(device),
            **({"gpu": torch.cuda.get_device_name(device)} if torch.device(device).type == "cuda" else {})}


def make_cohort(work: Path, spec: dict, seed: int, cache_dir=None) -> Path:
    from duiit import head_cohort, sample_data
    from duiit.errors import DuiitError
    try:
        samples = {name: sample_data.fetch(name, cache_dir)
                   for name in head_cohort.needed_samples(spec.get("mr_volumes"))}
    except DuiitError as exc:
        raise Unavailable(f"the real sample images cannot be fetched here: {exc}") from None
    manifest = head_cohort.build_cohort(work / "cohort", n_ct_patients=spec["n_ct_patients"],
                                        n_mr_patients=spec["n_mr_patients"], n_check=spec["n_check"], seed=seed,
                                        size=spec["size"], ct_train_fraction=spec["ct_train_fraction"],
                                        lesion_fraction=spec["lesion_fraction"], samples=samples,
                                        mr_volumes=spec.get("mr_volumes"),
                                        mr_lesion_gain=spec.get("mr_lesion_gain", head_cohort.MR_LESION_GAIN),
                                        n_ct_unlabelled=spec.get("n_ct_unlabelled", 0),
                                        twins=spec.get("twins", False))
    # how it was built, for --cohort on a machine that cannot fetch the images
    (manifest.parent / COHORT_RECORD).write_text(json.dumps({"spec": spec, "cohort_seed": seed}, indent=1) + "\n")
    return manifest


def cohort_description(manifest: Path, cohort) -> dict:
    summary = json.loads((manifest.parent / "cohort.json").read_text())
    mr_names = [v["name"] for v in summary["real_volumes"] if v["modality"] == "MR"]
    counts = {}
    for name in ("target_train", "target_test", "source_train"):
        slices = getattr(cohort, name)
        lesion = cohort.label_names.index("lesion")
        counts[name] = {"patients": len(slices.cases), "slices": len(slices),
                        "lesion_slices": int((slices.labels == lesion).sum())}
    # Cross-check the slice labels the core derived against the cohort's own record of lesion slices (a core bug
    # once read freed memory there and mislabelled slices; see runs 1-2 in the results).
    expected = {"target_train": 0, "target_test": 0, "source_train": 0}
    for case in summary["cases"].values():
        key = {("CT", "train"): "target_train", ("CT", "test"): "target_test",
               ("MR", "train"): "source_train"}.get((case["modality"], case["split"]))
        if key:
            expected[key] += len(case["lesion_slices"])
    found = {k: v["lesion_slices"] for k, v in counts.items()}
    label_check = {"lesion_slices_in_cohort_json": expected, "lesion_slices_labelled_by_core": found,
                   "match": expected == found}
    if not label_check["match"]:
        log(f"WARNING: slice labels disagree with the cohort's lesion masks: {label_check}")
    if cohort.has_unlabelled_target:
        counts["target_unlabelled"] = {"patients": len(cohort.target_unlabelled.cases),
                                       "slices": len(cohort.target_unlabelled)}
    simulated = summary["counts"].get("mr_simulated", 0)
    gain = " to ".join(f"{100 * g:+.0f}" for g in summary["lesions"]["mr_gain_over_local_brain"])
    caveats = ["all CT 'patients' are augmentations of ONE real CT (InVesalius Cranium), so the CT test split is the "
               "same person's anatomy as the CT training split"]
    if mr_names:
        caveats.append(f"MR patients are augmentations of {len(mr_names)} real T1 MRs ({', '.join(mr_names)}); "
                       f"their lesions are SIMULATED, T1 {gain} % of the local brain")
    if simulated:
        caveats.append(f"{simulated} MR patients are T1s SIMULATED from other augmentations of the real CT (the same "
                       "mapping as the check set), their lesions the CT lesions seen through that mapping")
    unlabelled = summary["counts"].get("ct_unlabelled", 0)
    if unlabelled:
        caveats.append(f"{unlabelled} more CT patients (augmentations of the same CT, lesions as often as in the "
                       "labelled ones) are UNLABELLED: they train the translators' CT side only, never a predictor")
    from duiit.manifest import read_manifest
    twins = sum(case.patient_id.endswith("-twin") for case in read_manifest(manifest))
    if twins:
        caveats.append(f"{twins} patients are lesion-free TWINS of labelled lesion patients (the same augmentation, "
                       "jitter and noise without the lesions; label none, in their patient's split)")
    caveats += ["CT lesions are SIMULATED, hyperdense 65-85 HU"
                + ("; the real tumours of brain1/brain2 count as lesions (MR only)"
                   if {"brain1_t1", "brain2_t1"} & set(mr_names) else ""),
                "the paired check set's MR is SIMULATED from held-out real-CT augmentations"]
    return {"what": summary["what"], "label_check": label_check, "caveats": caveats,
            "grid": summary["grid"], "lesions": summary["lesions"], "counts_by_split": counts,
            "volume_counts": summary["counts"]}


# ----------------------------------------------------------------------------------------------
# training and evaluation


class StepLog:
    """Trainer progress -> a line on stderr every `every` steps."""

    def __init__(self, name: str, every: int, on_step=None):
        self.name, self.every, self.started = name, max(1, every), time.monotonic()
        self.on_step = on_step
        self.done_before_start = None  # steps a resumed run had done before this process

    def step(self, phase, iteration, total, done_before, grand_total, losses):
        done = done_before + iteration
        if self.done_before_start is None:
            self.done_before_start = done - 1
        if self.on_step is not None:
            self.on_step(phase, iteration, total)
        if done % self.every == 0 or done == grand_total:
            elapsed = time.monotonic() - self.started
            text = " ".join(f"{k}={v:.3g}" for k, v in losses.items())
            log(f"  {self.name} {phase} {done}/{grand_total} "
                f"({elapsed / (done - self.done_before_start):.2f} s/step) {text}")

    def event(self, event, **fields):
        pass


def lesion_scores(predictor, images, lesion: int, device, batch_size: int = 64) -> np.ndarray:
    """Log-odds of lesion per slice (logit margin): the same ranking as the softmax probability, without the
    ties a saturated float32 softmax makes (an over-confident predictor gives p = 0.0 to many slices)."""
    import torch
    predictor.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            logits = predictor(images[start:start + batch_size].to(device, torch.float32)).double()
            others = torch.cat([logits[:, :lesion], logits[:, lesion + 1:]], dim=1)
            scores.append((logits[:, lesion] - torch.logsumexp(others, dim=1)).cpu())
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def predictor_metrics(predictor, slices, label_names, device) -> dict:
    """Slice-level AUC (from the lesion log-odds; `auc_probability`: from the float32 softmax as
    duiit.prediction.evaluate computes it), accuracy, balanced accuracy, and volume-level AUC/accuracy."""
    from duiit.metrics import auc_binary
    from duiit.prediction import aggregate, run_predictor
    lesion = label_names.index("lesion")
    probabilities = run_predictor(predictor, slices.images, "classification", device=device)
    scores = lesion_scores(predictor, slices.images, lesion, device)
    labels = slices.labels.numpy()
    positive = labels == lesion
    predicted = probabilities.argmax(axis=1) == lesion
    sensitivity = float(predicted[positive].mean()) if positive.any() else float("nan")
    specificity = float((~predicted[~positive]).mean()) if (~positive).any() else float("nan")
    index = slices.case_index.numpy()
    volumes = np.stack([aggregate(probabilities[index == n]) for n in range(len(slices.cases))])
    volume_positive = np.array([c.label == "lesion" for c in slices.cases])
    return {"auc": auc_binary(scores, positive),
            "auc_probability": auc_binary(probabilities[:, lesion], positive),
            "tied_scores_fraction": float(1.0 - len(np.unique(probabilities[:, lesion])) / max(len(labels), 1)),
            "accuracy": float((predicted == positive).mean()),
            "balanced_accuracy": 0.5 * (sensitivity + specificity),
            "sensitivity": sensitivity, "specificity": specificity,
            "n_slices": int(len(labels)), "n_lesion_slices": int(positive.sum()),
            "volume_auc": auc_binary(volumes[:, lesion], volume_positive),
            "volume_accuracy": float(((volumes.argmax(axis=1) == lesion) == volume_positive).mean()),
            "n_volumes": int(len(volumes))}


def loss_summary(history: list, fraction: float = 0.1) -> dict:
    """Mean of each loss over the last `fraction` of each phase (what the run converged to)."""
    out = {}
    for phase in dict.fromkeys(h["phase"] for h in history):
        rows = [h for h in history if h["phase"] == phase]
        tail = rows[-max(1, int(len(rows) * fraction)):]
        keys = [k for k in tail[0] if k not in ("step", "phase")]
        out[phase] = {k: float(np.mean([r[k] for r in tail if k in r])) for k in keys}
    return out


def train_one(method: str, seed: int, args, cohort, network, device, work: Path) -> dict:
    """Train one method/seed; returns its record, and writes a bundle when it has a translator."""
    from duiit.atomic import atomic_path
    from duiit.bundle import save_bundle
    from duiit.distributed import unwrap
    from duiit.training import Trainer, TrainingOptions
    from duiit.training_job import bundle_header
    base = {ABLATION: "duiit", FRESH: "duiit"}.get(method, method)
    # the target guide's own training exists in duiit only; the baselines in the same run train without it
    guide = {"guide_pretrain": args.guide_pretrain, "guide_inverted_lesions": args.guide_inverted_lesions,
             "guide_erased_lesions": args.guide_erased_lesions, "predictor_erased_lesions": args.predictor_erased_lesions}
    if base != "duiit":
        guide = {}
    options = TrainingOptions(method=base, task="classification", source="MR", target="CT",
                              iterations=args.iterations, batch_size=args.batch_size, lambda_task=args.lambda_task,
                              warmup=args.warmup, guidance=method != ABLATION, seed=seed,
                              source_weight=args.source_weight, task_floor=args.task_floor,
                              lambda_identity=args.lambda_identity, guide_classes=args.guide_classes,
                              guide_predictor=args.guide_predictor, **guide,
                              predictor_augment=args.predictor_augment, lambda_structure=args.lambda_structure,
                              translator_ema=args.translator_ema, mr_standard=not args.no_mr_standard,
                              mr_contrast_jitter=args.mr_contrast_jitter, depth_from_input=args.depth_from_input,
                              checkpoint_every=args.checkpoint_every or 10 ** 9)
    checkpoint = work / "checkpoints" / f"{method}-seed{seed}.ckpt" if args.checkpoint_every else None
    resuming = checkpoint is not None and checkpoint.is_file()
    # the convergence curve lives beside the checkpoint, so a resumed run keeps the points measured before
    curve_file = Path(str(checkpoint) + ".curve.json") if checkpoint else None
    curve = json.loads(curve_file.read_text()) if resuming and curve_file.is_file() else []
    paused = [0.0]

    def fidelity_curve(phase, iteration, total):
        """Paired fidelity of the translator as it trains (every --fidelity-every steps of its phase)."""
        if phase in ("translator", "joint") and (iteration % args.fidelity_every == 0 or iteration == total):
            t0 = time.monotonic()
            bundle = memory_bundle(trainer, options, network)
            curve[:] = [point for point in curve if point["step"] < iteration]  # measured before a resume
            curve.append({"step": iteration, **paired_check(bundle, args.manifest_path, str(device))["mean"]})
            curve[-1].pop("tissues", None)
            if curve_file:
                with atomic_path(curve_file) as tmp:
                    Path(tmp).write_text(json.dumps(curve))
            log(f"  {method}/seed{seed} step {iteration}: paired MAE {curve[-1].get('mae_hu', float('nan')):.1f} HU")
            paused[0] += time.monotonic() - t0

    hook = fidelity_curve if args.fidelity_every and method in TRANSLATING else None
    started = time.monotonic()
    trainer = Trainer(cohort, options, network, device,
                      progress=StepLog(f"{method}/seed{seed}", args.log_every, hook), checkpoint_path=checkpoint)
    if resuming:
        log(f"  {method}/seed{seed}: resuming from {checkpoint}")
    trainer.run(resume=resuming)
    seconds = time.monotonic() - started - paused[0]
    predictor = unwrap(trainer.predictor)
    record = {"method": method, "seed": seed, "train_seconds": round(seconds, 1), "steps": trainer.step,
              "test": {**predictor_metrics(predictor, cohort.target_test, cohort.label_names, device),
                       **lesion_visibility(predictor, args, cohort, network, device)},
              "final_losses": loss_summary(trainer.history)}
    if resuming:
        record["resumed"] = True  # from a checkpoint: train_seconds counts this process's steps only
    if curve:
        record["fidelity_curve"] = curve
    if trainer.translator is not None:
        translated = trainer.translate_source()
        # diagnostic: C on G(MR) training slices; far above its real-CT AUC hints at label shortcuts in G(MR)
        record["translated_source_train"] = predictor_metrics(predictor, translated, cohort.label_names, device)
        bundle = work / "bundles" / f"{method}-seed{seed}.duiit"
        header = bundle_header(cohort, options, network, {"test": record["test"]}, trainer, seconds, 1)
        header["method"] = method
        save_bundle(bundle, header, {"predictor": predictor, "translator": trainer.deployed_translator()})
        record["bundle"] = str(bundle)
        if method == "duiit" and args.fresh_predictor:
            record["_translator_state"] = {k: v.clone() for k, v in trainer.deployed_translator().state_dict().items()}
    return record


def train_fresh(seed: int, translator_state: dict, args, cohort, network, device) -> dict:
    """The authors' protocol: a fresh predictor on real CT + G(MR) from the final DUIIT translator, for the
    same N predictor steps (Trainer's cyclegan second stage with the translator phase skipped)."""
    from duiit.distributed import unwrap
    from duiit.training import Trainer, TrainingOptions
    options = TrainingOptions(method="cyclegan", task="classification", iterations=args.iterations,
                              batch_size=args.batch_size, seed=seed, source_weight=args.source_weight,
                              translator_ema=0.0, checkpoint_every=10 ** 9)  # the translator given is the one kept
    trainer = Trainer(cohort, options, network, device, progress=StepLog(f"{FRESH}/seed{seed}", args.log_every))
    unwrap(trainer.translator).load_state_dict(translator_state)
    trainer.step = args.iterations  # the translator phase counts as done: run() goes to the predictor phase
    started = time.monotonic()
    trainer.run()
    predictor = unwrap(trainer.predictor)
    return {"method": FRESH, "seed": seed, "train_seconds": round(time.monotonic() - started, 1),
            "steps": trainer.step - args.iterations,
            "test": {**predictor_metrics(predictor, cohort.target_test, cohort.label_names, device),
                     **lesion_visibility(predictor, args, cohort, network, device)},
            "final_losses": loss_summary(trainer.history)}


def lesion_visibility(predictor, args, cohort, network, device) -> dict:
    """The slice AUC with every test lesion erased, and the twin AUC: each lesion slice against itself with
    its lesion erased (Testing/benchmarks/lesion_erasure.py); 0.5 when a predictor finds lesion slices by
    their level in the head alone. The edited test split is loaded once per run."""
    from Testing.benchmarks.lesion_erasure import edited_test_split, visibility
    if getattr(args, "twin_sets", None) is None:
        with tempfile.TemporaryDirectory(prefix="duiit-erased-") as scratch:
            args.twin_sets = {v: edited_test_split(args.manifest_path.parent, v, network.image_size,
                                                   cohort.label_names, Path(scratch)) for v in ("kept", "erased")}
    row = visibility(predictor, args.twin_sets, cohort.label_names.index("lesion"), device)
    return {"auc_lesions_erased": row["erased"], "twin_auc": row["twin_auc"], "twin_pair_win": row["twin_pair_win"]}


# ----------------------------------------------------------------------------------------------
# translation fidelity


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def lesion_contrast(hu: np.ndarray, lesion: np.ndarray, head: np.ndarray) -> tuple:
    """(lesion voxels' HU, ring voxels' HU) for contrast = mean(lesion) - mean(ring)."""
    from duiit.lesion_inversion import ring
    if not lesion.any():
        return np.zeros(0), np.zeros(0)
    return hu[lesion], hu[ring(lesion) & head & (hu > -200)]


def fidelity(bundle_path: str, manifest: Path, device: str = "cpu") -> dict:
    import csv

    import SimpleITK as sitk
    from duiit.bundle import load_bundle
    from duiit.fidelity import tissue_statistics
    from duiit.translate import translate_volume
    root = manifest.parent
    bundle = load_bundle(bundle_path)
    rows = list(csv.DictReader(open(manifest)))
    translated, real, lesion_t, ring_t, lesion_r, ring_r = [], [], [], [], [], []
    by_kind = {1: ([], []), 2: ([], [])}  # MR mask value 1: simulated lesion, 2: real tumour (brain1/brain2)
    for row in rows:
        head = _read(root / row["head_mask"]) > 0
        labels = _read(root / row["mask"]) if row.get("mask") else np.zeros(head.shape, np.float32)
        lesion = labels > 0
        if row["modality"] == "MR":
            hu = sitk.GetArrayFromImage(translate_volume(bundle, sitk.ReadImage(str(root / row["path"])),
                                                         device=device).ct)
            translated.append(hu[head])
            a, b = lesion_contrast(hu, lesion, head)
            lesion_t.append(a), ring_t.append(b)
            for value, (inside, around) in by_kind.items():
                a, b = lesion_contrast(hu, np.rint(labels) == value, head)
                inside.append(a), around.append(b)
        elif row["modality"] == "CT" and row["split"] == "test":
            hu = _read(root / row["path"])
            real.append(hu[head])
            a, b = lesion_contrast(hu, lesion, head)
            lesion_r.append(a), ring_r.append(b)
    pooled = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    t, r = pooled(translated), pooled(real)
    unpaired = {"translated_mr": tissue_statistics(t, np.ones(t.shape, bool)),
                "real_ct_test": tissue_statistics(r, np.ones(r.shape, bool)),
                "n_translated_volumes": len(translated), "n_real_ct_volumes": len(real)}
    contrast = {
        "translated_mr_lesion_minus_ring_hu": _contrast(pooled(lesion_t), pooled(ring_t)),
        "translated_mr_simulated_lesions_hu": _contrast(pooled(by_kind[1][0]), pooled(by_kind[1][1])),
        "translated_mr_real_tumours_hu": _contrast(pooled(by_kind[2][0]), pooled(by_kind[2][1])),
        "real_ct_lesion_minus_ring_hu": _contrast(pooled(lesion_r), pooled(ring_r)),
        "note": "mean HU in lesion-mask voxels minus mean HU in a 1-3 voxel in-plane ring around them "
                "(inside the head, > -200 HU); MR lesions include the real brain1/brain2 tumours"}
    return {"unpaired": unpaired, "lesion_contrast": contrast,
            "paired_simulated_mr": paired_check(bundle, manifest, device),
            f"paired_simulated_mr_{AVERAGED_VIEWS}_views": paired_check(bundle, manifest, device,
                                                                        AVERAGED_VIEWS)["mean"]}


ORACLE_BINS = np.linspace(-1.2, 1.5, 81)  # normalised MR intensity bins of the oracle intensity map


def oracle_intensity_map(pairs: list) -> list:
    """The best a per-voxel intensity map can do on the check set: each normalised MR intensity bin -> the
    median real HU of its head voxels, fitted on the check pairs themselves (so it knows the answer). A
    translator must use spatial context (bone and CSF are both dark on T1) to do better."""
    from duiit.fidelity import paired_fidelity
    from duiit.normalisation import normalise
    units = [normalise(mr, "MR")[0] for mr, _, _ in pairs]
    bins = [np.digitize(u, ORACLE_BINS) for u in units]
    voxel_bins = np.concatenate([b[head] for b, (_, _, head) in zip(bins, pairs)])
    voxel_hu = np.concatenate([ct[head] for _, ct, head in pairs])
    table = np.full(len(ORACLE_BINS) + 1, -1000.0, np.float32)
    for k in np.unique(voxel_bins):
        table[k] = np.median(voxel_hu[voxel_bins == k])
    return [paired_fidelity(np.where(head, table[b], -1000.0).astype(np.float32), ct, head)
            for b, (_, ct, head) in zip(bins, pairs)]


def translated_check_set(bundle, cohort: Path, device: str = "cpu", views: int = 1):
    """For each check volume of the cohort folder (check_manifest.csv; none if it has no check set): its
    SIMULATED MR, the bundle's translation of it (HU; averaged over `views` views), the real CT it was
    simulated from, and the head mask."""
    import csv

    import SimpleITK as sitk
    from duiit.translate import translate_volume
    check_manifest = cohort / "check_manifest.csv"
    if not check_manifest.is_file():
        return
    for row in csv.DictReader(open(check_manifest)):
        mr = sitk.ReadImage(str(cohort / row["path"]))
        hu = sitk.GetArrayFromImage(translate_volume(bundle, mr, device=device, views=views).ct)
        yield (sitk.GetArrayFromImage(mr).astype(np.float32), hu, _read(cohort / row["paired_ct"]),
               _read(cohort / row["head_mask"]) > 0)


def paired_check(bundle, manifest: Path, device: str = "cpu", views: int = 1) -> dict:
    """Translated SIMULATED MR of the check set vs the real CT it was simulated from (the translation averaged
    over `views` views: duiit/view_averaging.py)."""
    from duiit.fidelity import flat_grey_head, paired_fidelity
    paired, constant, pairs = [], [], []
    for mr, hu, real_ct, head in translated_check_set(bundle, manifest.parent, device, views):
        paired.append(paired_fidelity(hu, real_ct, head))
        pairs.append((mr, real_ct, head))
        constant.append(paired_fidelity(flat_grey_head(head), real_ct, head))
    summary = {}
    if paired:
        summary = {k: float(np.mean([p[k] for p in paired])) for k in ("mae_hu", "psnr_db", "ssim")}
        tissues = {}
        for name in paired[0]["tissues"]:
            values = [p["tissues"][name] for p in paired if name in p["tissues"]]
            tissues[name] = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        summary["tissues"] = tissues
    references = {"reference_constant_20hu_in_head": constant,
                  "reference_oracle_intensity_map": oracle_intensity_map(pairs) if pairs else []}
    return {"note": "MR SIMULATED from held-out real-CT augmentations (T1-like mapping of HU per tissue); not a "
                    "real MR", "n_volumes": len(paired), "mean": summary, "per_volume": paired,
            **{name: {k: float(np.mean([c[k] for c in values])) for k in ("mae_hu", "psnr_db", "ssim")}
               if values else {} for name, values in references.items()}}


def memory_bundle(trainer, options, network):
    """The trainer's current networks as an in-memory Bundle (what load_bundle would return), for translate_volume."""
    from duiit.bundle import Bundle
    from duiit.distributed import unwrap
    from duiit.normalisation import fit_normalisation
    from duiit.training_job import source_normalisation_header
    source = source_normalisation_header(options.source, [], trainer.cohort.source_standard)
    header = {"format": "duiit-bundle", "format_version": 1, "source_modality": options.source,
              "target_modality": options.target, "task": options.task, "label_names": trainer.cohort.label_names,
              "method": options.method, "regression_scale": list(trainer.regression_scale),
              "network": network.to_dict(),
              "normalisation": {"target": fit_normalisation(np.zeros(1), "CT"), "source": source}}
    tensors = {f"{prefix}.{k}": v.detach().cpu().clone()
               for prefix, module in (("translator", trainer.deployed_translator()),
                                      ("predictor", unwrap(trainer.predictor)))
               for k, v in module.state_dict().items()}
    return Bundle(Path("<in memory>"), header, tensors)


def _contrast(lesion: np.ndarray, ring: np.ndarray):
    if lesion.size == 0 or ring.size == 0:
        return None
    return float(lesion.mean() - ring.mean())


def figure(work: Path, manifest: Path, names: list, path: Path, device: str = "cpu") -> None:
    """PNG: training MR lesion slices and the paired check slice, each translated by the named bundles, next to a
    real CT lesion slice (window -200..400 HU)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    root = manifest.parent
    rows = list(csv.DictReader(open(manifest)))
    checks = list(csv.DictReader(open(root / "check_manifest.csv"))) if (root / "check_manifest.csv").is_file() else []
    bundles = [load_bundle(work / "bundles" / f"{n}.duiit") for n in names]
    by_source = {}
    for r in rows:
        if r["modality"] == "MR" and r["label"] == "lesion":
            by_source.setdefault(r["source_volume"], r)
    cases = list(by_source.values())[:3] + checks[:1]
    ct_rows = [r for r in rows if r["modality"] == "CT" and r["label"] == "lesion" and r["split"] == "test"]

    def lesion_slice(r, depth):
        if not r.get("mask"):
            return depth // 2
        m = _read(root / r["mask"])
        return int(np.argmax(m.reshape(len(m), -1).sum(1)))

    columns = 2 + len(names)
    fig, axes = plt.subplots(len(cases) + 1, columns, figsize=(2.3 * columns, 2.3 * (len(cases) + 1)), squeeze=False)
    for i, r in enumerate(cases):
        image = sitk.ReadImage(str(root / r["path"]))
        array = sitk.GetArrayFromImage(image)
        k = lesion_slice(r, len(array))
        kind = "SIMULATED MR (check)" if r.get("paired_ct") else f"training MR ({r['source_volume']})"
        axes[i, 0].imshow(array[k], cmap="gray")
        axes[i, 0].set_title(f"{r['patient_id']} {kind}", fontsize=6)
        for j, b in enumerate(bundles):
            ct = sitk.GetArrayFromImage(translate_volume(b, image, device=device).ct)[k]
            axes[i, 1 + j].imshow(ct, cmap="gray", vmin=-200, vmax=400)
            axes[i, 1 + j].set_title(f"{names[j]} -> CT", fontsize=6)
        if r.get("paired_ct"):
            axes[i, -1].imshow(_read(root / r["paired_ct"])[k], cmap="gray", vmin=-200, vmax=400)
            axes[i, -1].set_title("its real CT", fontsize=6)
    if ct_rows:
        c = _read(root / ct_rows[0]["path"])
        k = lesion_slice(ct_rows[0], len(c))
        axes[-1, 0].imshow(c[k], cmap="gray", vmin=-200, vmax=400)
        axes[-1, 0].set_title(f"real CT {ct_rows[0]['patient_id']} with lesion", fontsize=6)
        axes[-1, 1].imshow(c[k], cmap="gray", vmin=-1000, vmax=1500)
        axes[-1, 1].set_title("same, window -1000..1500", fontsize=6)
    for a in axes.ravel():
        a.axis("off")
    fig.suptitle("CT panels: window -200..400 HU unless noted", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# aggregation and reports


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def clean(value):
    """JSON-safe: NaN/inf -> null; floats to 6 significant digits (far finer than any spread measured, and
    the results file stays under the repository's size limit)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def mean_std(values) -> dict:
    values = [v for v in values if _finite(v) is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate_run(records: list, methods: list) -> dict:
    out = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        entry = {k: mean_std([r["test"].get(k) for r in rows])
                 for k in ("auc", "auc_probability", "accuracy", "balanced_accuracy", "volume_auc",
                           "auc_lesions_erased", "twin_auc", "twin_pair_win")}
        entry["train_seconds"] = mean_std([r["train_seconds"] for r in rows])
        if rows[0].get("translated_source_train"):
            entry["auc_on_translated_mr_train"] = mean_std([r["translated_source_train"]["auc"] for r in rows])
        if rows[0].get("fidelity"):
            paired = [r["fidelity"]["paired_simulated_mr"]["mean"] for r in rows]
            averaged = [r["fidelity"].get(f"paired_simulated_mr_{AVERAGED_VIEWS}_views") for r in rows]
            for key in ("mae_hu", "psnr_db", "ssim"):
                entry[f"paired_{key}"] = mean_std([p.get(key) for p in paired])
                if all(averaged):  # runs before views existed have none
                    entry[f"paired_{AVERAGED_VIEWS}_views_{key}"] = mean_std([a.get(key) for a in averaged])
            for tissue in ("air", "soft tissue", "bone"):
                entry[f"translated_{tissue}_mean_hu"] = mean_std(
                    [r["fidelity"]["unpaired"]["translated_mr"][tissue]["mean_hu"] for r in rows])
                entry[f"translated_{tissue}_fraction"] = mean_std(
                    [r["fidelity"]["unpaired"]["translated_mr"][tissue]["fraction"] for r in rows])
            entry["translated_lesion_contrast_hu"] = mean_std(
                [r["fidelity"]["lesion_contrast"]["translated_mr_lesion_minus_ring_hu"] for r in rows])
            for kind in ("simulated_lesions", "real_tumours"):
                entry[f"translated_{kind}_contrast_hu"] = mean_std(
                    [r["fidelity"]["lesion_contrast"].get(f"translated_mr_{kind}_hu") for r in rows])
        out[method] = entry
    return out


def targets(summary: dict) -> dict:
    """Issue 4's targets. 'Above by more than one std': mean difference > the larger of the two stds."""
    from duiit.fidelity import TARGET_MAE_HU
    result = {}
    # the twin AUC (runs from 256 on) asks the same of lesions seen, not of the slices' level in the head
    for metric in ("auc", "twin_auc"):
        duiit = summary.get("duiit", {}).get(metric)
        for other in ("cyclegan", "target-only"):
            o = summary.get(other, {}).get(metric)
            if duiit and o and duiit["mean"] is not None and o["mean"] is not None:
                margin = max(duiit["std"], o["std"])
                result[f"duiit_{metric}_above_{other}"] = {"difference": duiit["mean"] - o["mean"],
                                                           "required_above": margin,
                                                           "met": duiit["mean"] - o["mean"] > margin}
    mae = summary.get("duiit", {}).get("paired_mae_hu")
    if mae and mae["mean"] is not None:
        entry = {"mae_hu": mae["mean"], "met": mae["mean"] <= TARGET_MAE_HU}
        averaged = summary["duiit"].get(f"paired_{AVERAGED_VIEWS}_views_mae_hu")
        if averaged and averaged["mean"] is not None:  # a way to translate that duiit translate --views offers
            entry.update(views=AVERAGED_VIEWS, mae_hu_averaged=averaged["mean"],
                         met=min(mae["mean"], averaged["mean"]) <= TARGET_MAE_HU)
        result["duiit_paired_mae_at_most_100_hu"] = entry
    result["all_met"] = bool(result) and all(v["met"] for v in result.values() if isinstance(v, dict))
    return result


def _pm(entry, key, digits=3):
    value = entry.get(key)
    if not value or value["mean"] is None:
        return "–"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def render_markdown(runs: list, analysis: str) -> str:
    lines = ["# Benchmark on real head images (issue 4)", "",
             "Generated by `Testing/benchmarks/real_images.py` from `real_images.json` and "
             "`real_images-runs-*.json` (every run is kept; newest last). Predictors are evaluated on the "
             "**real-CT test split only**; mean ± sample std over seeds.",
             "", ANALYSIS_START, analysis.strip("\n") if analysis else "_(no analysis yet)_", ANALYSIS_END, ""]
    for n, run in enumerate(runs, start=1):
        lines += _render_run(n, run)
    return "\n".join(lines) + "\n"


def _render_run(n: int, run: dict) -> list:
    m, c, s = run["machine"], run["cohort"], run.get("summary", {})
    status = run.get("status", "complete")
    suffix = f" — {status}" if status != "complete" else ""
    suffix += " — INVALID" if run.get("invalid") else ""
    title = f"## Run {n}: {run.get('tag') or 'run'} ({run['started']}){suffix}"
    counts = c.get("counts_by_split", {})
    out = [title, "",
           f"- Command: `{run['command']}`",
           f"- Machine: {m['cpu']}, {m['cores']} cores (shared; load average at start "
           f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_start') or [])}), torch {m['torch']} on "
           + (f"{m['gpu']} ({m['device']})" if m.get("gpu") else f"CPU with {m['torch_threads']} thread(s)")
           + f", Python {m['python']}",
           f"- Wall time: {run.get('wall_seconds', 0) / 60:.1f} min",
           f"- Settings: {run['settings']['iterations']} predictor iterations per method (cyclegan: also "
           f"{run['settings']['iterations']} translator steps first; duiit: {run['settings']['iterations']} joint "
           "steps), "
           f"batch {run['settings']['batch_size']}, network preset `small` at {run['settings']['image_size']} px, "
           f"lambda_task {run['settings']['lambda_task']}, warm-up {run['settings']['warmup']}, source weight b "
           f"{run['settings'].get('source_weight', 1.0)}, task floor {run['settings'].get('task_floor', 0.0)}, "
           f"identity weight {run['settings'].get('lambda_identity', 0.5)}, structure weight "
           f"{run['settings'].get('lambda_structure', 0.0)}, translator EMA decay "
           f"{run['settings'].get('translator_ema', 0.0)}, guiding classes "
           f"{run['settings'].get('guide_classes') or 'all'}, guiding predictor "
           f"{run['settings'].get('guide_predictor', 'joint')}"
           f"{_guide_training(run['settings'])}, predictor width/depth "
           f"{run['settings']['network']['predictor_width']}/{run['settings']['network']['predictor_depth']}"
           f"{' (max pooling)' if run['settings']['network'].get('predictor_max_pool') else ''}"
           f"{', training slices mirrored and shifted' if run['settings'].get('predictor_augment') else ''}, "
           f"discriminator layers {run['settings']['network']['discriminator_layers']}, head depth rings "
           f"{_head_depth(run['settings']['network'])}"
           f"{' (D judges a translation by its input depth map)' if run['settings'].get('depth_from_input') else ''}"
           ", MR histogram standard "
           f"{'on' if run['settings'].get('mr_standard') else 'off'}"
           f"{_contrast_jitter(run['settings'])}, seeds "
           f"{run['settings']['seeds']}",
           f"- Cohort: {c['what']}.",
           "  " + "; ".join(c["caveats"]) + ".",
           "- Split (same for every method and seed): " + "; ".join(
               f"{k}: {v['patients']} patients, {v['slices']} slices "
               + (f"({v['lesion_slices']} with lesion)" if "lesion_slices" in v else "(no labels)")
               for k, v in counts.items()),
           ""]
    if run.get("invalid"):
        out += [f"**INVALID — kept for the record only, do not use these numbers**: {run['invalid']}", ""]
    check = c.get("label_check")
    if check and not check["match"]:
        out += [f"**LABEL CHECK FAILED**: lesion slices per split from the cohort's masks "
                f"{check['lesion_slices_in_cohort_json']}, as labelled for training/evaluation "
                f"{check['lesion_slices_labelled_by_core']}.", ""]
    if run.get("notes"):
        out += [f"Notes: {run['notes']}", ""]
    if run.get("figure"):
        out += [f"Figure: [{run['figure']}]({run['figure']}) (first seed's translators on training MR lesion slices "
                "and on a SIMULATED check MR).", ""]
    if run.get("errors"):
        out += ["Errors (these runs are missing from the tables): " + "; ".join(run["errors"]), ""]
    if s:
        both = any("auc_probability" in r["test"] for r in run["records"])
        if both:
            out += ["| method | slice AUC | slice AUC (softmax p) | slice accuracy | balanced accuracy | volume AUC | "
                    "C's AUC on G(MR) train | train s |", "|---|---|---|---|---|---|---|---|"]
        else:
            out += ["Slice AUC of this run: from the float32 softmax probability (as duiit.prediction.evaluate), "
                    "which could tie if a predictor saturated; later runs also give the tie-free AUC from the lesion "
                    "log-odds (the two were equal in every later record: no ties).", "",
                    "| method | slice AUC (softmax p) | slice accuracy | balanced accuracy | volume AUC | "
                    "C's AUC on G(MR) train | train s |", "|---|---|---|---|---|---|---|"]
        twins = any("twin_auc" in r["test"] for r in run["records"])
        if twins:  # runs from 256 on: two more columns (lesion_erasure.py)
            out[-2] += " slice AUC, test lesions erased | twin AUC (lesion slice vs itself erased) |"
            out[-1] += "---|---|"
        for method, e in s.items():
            out.append(f"| {method} | {_pm(e, 'auc')} | " + (f"{_pm(e, 'auc_probability')} | " if both else "")
                       + f"{_pm(e, 'accuracy')} | {_pm(e, 'balanced_accuracy')} | "
                       f"{_pm(e, 'volume_auc')} | {_pm(e, 'auc_on_translated_mr_train')} | "
                       f"{_pm(e, 'train_seconds', 0)} |"
                       + (f" {_pm(e, 'auc_lesions_erased')} | {_pm(e, 'twin_auc')} |" if twins else ""))
        if twins:
            out += ["", "A twin AUC of 0.5: the predictor scores each lesion slice as the same slice without its "
                    "lesion, so its slice AUC comes from where lesions can be (their level in the head), not from "
                    "seeing them."]
        out.append("")
        fid = [(k, e) for k, e in s.items() if "paired_mae_hu" in e]
        if fid:
            real = next((r["fidelity"]["unpaired"]["real_ct_test"] for r in run["records"] if r.get("fidelity")), None)
            rc = next((r["fidelity"]["lesion_contrast"]["real_ct_lesion_minus_ring_hu"] for r in run["records"]
                       if r.get("fidelity")), None)
            out += ["Translation fidelity. Paired columns: MR **SIMULATED** from held-out real-CT augmentations "
                    "(T1-like HU mapping), compared with that real CT (MAE inside the head; PSNR over 4000 HU). "
                    "Unpaired columns: the translated training MR volumes (real T1s unless the cohort line says "
                    "simulated), HU mean per tissue class found by thresholds on the translated image (fraction of "
                    "head voxels in brackets).", "",
                    "| translator | paired MAE HU | paired PSNR dB | paired SSIM | air HU | soft tissue HU | "
                    "bone HU | lesion contrast HU |", "|---|---|---|---|---|---|---|---|"]
            for method, e in fid:
                out.append(
                    f"| {method} | {_pm(e, 'paired_mae_hu', 1)} | {_pm(e, 'paired_psnr_db', 2)} | "
                    f"{_pm(e, 'paired_ssim', 3)} | " + " | ".join(
                        f"{_pm(e, f'translated_{t}_mean_hu', 0)} ({_pm(e, f'translated_{t}_fraction', 2)})"
                        for t in ("air", "soft tissue", "bone")) + f" | {_pm(e, 'translated_lesion_contrast_hu', 0)}"
                    + (f" (simulated {_pm(e, 'translated_simulated_lesions_contrast_hu', 0)}; real tumours "
                       f"{_pm(e, 'translated_real_tumours_contrast_hu', 0)})"
                       if e.get("translated_simulated_lesions_contrast_hu", {}).get("n") else "") + " |")
            for method, e in fid:
                if f"paired_{AVERAGED_VIEWS}_views_mae_hu" in e:
                    out.append(f"| {method}, averaged over {AVERAGED_VIEWS} views (`--views {AVERAGED_VIEWS}`) | "
                               + " | ".join(_pm(e, f"paired_{AVERAGED_VIEWS}_views_{key}", digits)
                                            for key, digits in (("mae_hu", 1), ("psnr_db", 2), ("ssim", 3)))
                               + " | | | | |")
            for key, name in (("reference_constant_20hu_in_head", "reference: 20 HU inside the head mask, -1000 "
                                                                   "outside"),
                              ("reference_oracle_intensity_map", "reference: best per-voxel MR intensity -> HU "
                                                                  "map, fitted on the check pairs (oracle)")):
                ref = next((r["fidelity"]["paired_simulated_mr"].get(key) for r in run["records"]
                            if r.get("fidelity")), None)
                if ref:
                    out.append(f"| {name} | {ref['mae_hu']:.1f} | {ref['psnr_db']:.2f} | {ref['ssim']:.3f} | | | | |")
            if real:
                out.append("| real CT (test split) | 0 | ∞ | 1 | " + " | ".join(
                    f"{real[t]['mean_hu']:.0f} ({real[t]['fraction']:.2f})" for t in ("air", "soft tissue", "bone"))
                    + (f" | {rc:.1f} |" if rc is not None else " | – |"))
            out.append("")
        curves = [r for r in run["records"] if r.get("fidelity_curve")]
        if curves:
            out += ["Paired fidelity (SIMULATED MR) during training, by translator/joint step: MAE HU / SSIM "
                    "(CycleGAN schedule: constant learning rate for the first half, then linear decay to 0):", ""]
            for r in curves:
                out.append(f"- {r['method']} seed {r['seed']}: " + ", ".join(
                    f"{c['step']}: {c['mae_hu']:.0f} / {c['ssim']:.3f}" for c in r["fidelity_curve"] if "mae_hu" in c))
            out.append("")
        t = run.get("targets", {})
        if t:
            words = []
            for key, value in t.items():
                if isinstance(value, dict):
                    detail = (f"difference {value['difference']:+.3f}, needs > {value['required_above']:.3f}"
                              if "difference" in value else f"{value['mae_hu']:.1f} HU" + (
                                  f"; {value['mae_hu_averaged']:.1f} HU averaged over {value['views']} views"
                                  if "views" in value else ""))
                    words.append(f"{key}: {'MET' if value['met'] else 'NOT MET'} ({detail})")
            if words:
                out += ["Targets (issue 4): " + "; ".join(words) + ".", ""]
        twins = any("twin_auc" in r["test"] for r in run["records"])
        pairs = any("twin_pair_win" in r["test"] for r in run["records"])
        out += [f"Per seed (slice AUC / accuracy on the real-CT test split{'; twin: the twin AUC' if twins else ''}"
                f"{'; pair: the share of lesion slices scoring above their own erased twin' if pairs else ''}):", "",
                "| method | " + " | ".join(f"seed {sd}" for sd in run["settings"]["seeds"]) + " |",
                "|---|" + "---|" * len(run["settings"]["seeds"])]
        for method in s:
            cells = []
            for seed in run["settings"]["seeds"]:
                r = next((r for r in run["records"] if r["method"] == method and r["seed"] == seed), None)
                cells.append("–" if r is None else f"{_num(r['test']['auc'])} / {_num(r['test']['accuracy'])}"
                             + (f" / twin {_num(r['test']['twin_auc'])}" if "twin_auc" in r["test"] else "")
                             + (f" / pair {_num(r['test']['twin_pair_win'])}" if "twin_pair_win" in r["test"] else "")
                             + (f" (MAE {r['fidelity']['paired_simulated_mr']['mean']['mae_hu']:.0f} HU)"
                                if r.get("fidelity") and r["fidelity"]["paired_simulated_mr"]["mean"] else ""))
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _guide_training(settings: dict) -> str:
    steps = settings.get("guide_pretrain", 0)
    text = f" (trained on real CT alone for {steps} steps before it steers)" if steps else ""
    if settings.get("guide_inverted_lesions"):
        text += " (also taught that its training lesions drawn inverted are not lesions)"
    if settings.get("guide_erased_lesions"):
        text += " (also judging G's lesion slices with the MR lesion erased, as none)"
    if settings.get("predictor_erased_lesions"):
        text += " (and the predictor learns those erased translations as none too)"
    return text


def _head_depth(network: dict) -> str:
    """The depth channel's rings as 'G/F x, D y' (runs 107-115 tried it in the generators too), or 0."""
    generator, discriminator = network.get("generator_head_depth", 0), network.get("discriminator_head_depth", 0)
    return f"G/F {generator}, D {discriminator}" if generator else str(discriminator)


def _contrast_jitter(settings: dict) -> str:
    jitter = settings.get("mr_contrast_jitter", 0.0)
    draws = "drawn per training seed" if settings.get("contrast_gammas") else "one draw for all seeds"
    return f" (each training MR bent by a gamma in [{1 - jitter:g}, {1 + jitter:g}], {draws})" if jitter else ""


def contrast_gammas(cohort) -> dict:
    """The gamma each training MR volume was bent by (patient -> gamma), for the record."""
    return {case["patient_id"]: case["normalisation"]["contrast_gamma"] for case in cohort.summary["cases"]
            if "contrast_gamma" in case["normalisation"]}


def _num(value):
    return "–" if value is None else f"{value:.3f}"


def write_results(out: Path, runs: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{RESULTS_NAME}.md"
    analysis = ""
    if md.is_file():
        text = md.read_text()
        if ANALYSIS_START in text and ANALYSIS_END in text:
            analysis = text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
            if analysis.strip() == "_(no analysis yet)_":
                analysis = ""
    runs = clean(runs)
    archived = len(runs) // ARCHIVE_BLOCK * ARCHIVE_BLOCK
    files = [(out / f"{RESULTS_NAME}-runs-{first + 1:03d}-{first + ARCHIVE_BLOCK:03d}.json",
              _runs_json(runs[first:first + ARCHIVE_BLOCK])) for first in range(0, archived, ARCHIVE_BLOCK)]
    files += [(out / f"{RESULTS_NAME}.json", _runs_json(runs[archived:])), (md, render_markdown(runs, analysis))]
    for path, text in files:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    for stale in set(out.glob(f"{RESULTS_NAME}-runs-*.json")) - {path for path, _ in files}:
        stale.unlink()  # archived in blocks of another size: its runs are in the files just written


def _runs_json(runs: list) -> str:
    """One run per line: git shows which runs changed, and a file stays small (70 runs with per-volume detail
    took 1.4 MB)."""
    return '{"runs": [\n' + ",\n".join(json.dumps(run, separators=(",", ":")) for run in runs) + "\n]}\n"


def load_runs(out: Path) -> list:
    """Every run kept in OUT, oldest first: the archived blocks, then real_images.json."""
    paths = sorted(out.glob(f"{RESULTS_NAME}-runs-*.json")) + [out / f"{RESULTS_NAME}.json"]
    return [run for path in paths if path.is_file() for run in json.loads(path.read_text()).get("runs", [])]


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.real_images", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny cohort, 1 seed, 3 iterations (< 60 s; for tests)")
    p.add_argument("--seeds", type=int, help="number of training seeds (default 3; quick: 1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--iterations", type=int, help="predictor iterations per method (default 250; quick: 3)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lambda-task", type=float, default=DEFAULTS.lambda_task)
    p.add_argument("--warmup", type=float, default=DEFAULTS.warmup)
    p.add_argument("--guide-classes", default=DEFAULTS.guide_classes,
                   help="only MR slices of these classes steer G (e.g. lesion; default: all)")
    p.add_argument("--guide-predictor", choices=("joint", "target"), default=DEFAULTS.guide_predictor,
                   help="which predictor steers G: joint (default) or target (trained on real CT only)")
    p.add_argument("--guide-pretrain", type=int, default=DEFAULTS.guide_pretrain, metavar="STEPS",
                   help="duiit with the target guide: steps that guide trains on real CT alone before the joint "
                        "phase (default 0: off)")
    p.add_argument("--guide-inverted-lesions", action="store_true",
                   help="duiit with the target guide: that guide also learns each CT training lesion mirrored "
                        "about its ring (drawn dark), labelled none (default: off)")
    p.add_argument("--guide-erased-lesions", action="store_true",
                   help="duiit: the guide also judges each guided MR lesion slice translated with its lesion erased, "
                        "as none (default: off)")
    p.add_argument("--predictor-erased-lesions", action="store_true",
                   help="duiit with --guide-erased-lesions: the predictor also learns those erased translations as "
                        "none (default: off)")
    p.add_argument("--lambda-identity", type=float, default=DEFAULTS.lambda_identity,
                   help=f"identity loss weight, times lambda_cycle (default {DEFAULTS.lambda_identity:g})")
    p.add_argument("--lambda-structure", type=float, default=DEFAULTS.lambda_structure,
                   help="weight of the MIND structure consistency loss of G and F (default "
                        f"{DEFAULTS.lambda_structure:g}: off)")
    p.add_argument("--translator-ema", type=float, default=DEFAULTS.translator_ema,
                   help="decay of the moving average of G/F's weights that the bundle keeps (default "
                        f"{DEFAULTS.translator_ema:g}; 0: the last weights)")
    p.add_argument("--task-floor", type=float, default=DEFAULTS.task_floor,
                   help="G's task loss per slice counts only above this (0: the plain loss)")
    p.add_argument("--no-mr-standard", action="store_true",
                   help="no MR histogram standardisation (as duiit train --no-mr-standard; runs before 150)")
    p.add_argument("--mr-contrast-jitter", type=float, default=DEFAULTS.mr_contrast_jitter, metavar="G",
                   help="each training MR onto the standard bent by its own gamma in [1-G, 1+G], drawn per "
                        f"training seed (as duiit train; default {DEFAULTS.mr_contrast_jitter:g})")
    p.add_argument("--methods", default=",".join(BASE_METHODS),
                   help=f"comma-separated, from {', '.join(BASE_METHODS + (ABLATION,))} (default: the four methods)")
    p.add_argument("--ablation", action="store_true", help="also duiit with guidance off")
    p.add_argument("--no-fresh-predictor", dest="fresh_predictor", action="store_false",
                   help="skip the fresh predictor on real + DUIIT-translated MR (authors' protocol; on by default)")
    p.add_argument("--cohort-seed", type=int, default=0)
    p.add_argument("--n-ct", type=int, help=f"CT patients (default {FULL_COHORT['n_ct_patients']})")
    p.add_argument("--ct-train-fraction", type=float,
                   help=f"fraction of CT patients for training (default {FULL_COHORT['ct_train_fraction']})")
    p.add_argument("--mr-volumes", type=lambda text: text.split(","),
                   help="real MRs to augment, comma-separated, from duiit.head_cohort.MR_VOLUMES "
                        "(default: DEFAULT_MR_VOLUMES, the three single-subject T1s), or simulated_t1: T1s "
                        "SIMULATED from other augmentations of the real CT, as the paired check's MR (a control)")
    p.add_argument("--mr-lesion-gain", type=lambda text: [float(v) for v in text.split(",")],
                   help="range LOW,HIGH of a simulated MR lesion's brightness over the local brain "
                        "(default 0.3,0.6 as in duiit.head_cohort; lower: lesions T1 shows faintly; "
                        "negative, e.g. -0.35,-0.2: darker than the brain, as acute blood on T1)")
    p.add_argument("--n-mr", type=int, help=f"MR patients (default {FULL_COHORT['n_mr_patients']})")
    p.add_argument("--n-ct-unlabelled", type=int,
                   help="more CT patients without labels, for the translators only (default 0; quick: 1)")
    p.add_argument("--twins", action="store_true", default=None,
                   help="a lesion-free twin of each labelled lesion patient (CT and MR), a negative in the same split, "
                        "so that a slice's level in the head says nothing about its label")
    p.add_argument("--source-weight", type=float, default=DEFAULTS.source_weight,
                   help="b: weight of C's loss on (translated) MR")
    p.add_argument("--predictor-width", type=int, help="predictor width (default: the small preset's)")
    p.add_argument("--predictor-depth", type=int, help="predictor conv stages (default: the small preset's)")
    p.add_argument("--predictor-augment", action="store_true",
                   help="the predictors' training slices mirrored left-right and shifted by up to 1/16 of the "
                        "image at random")
    p.add_argument("--predictor-max-pool", action="store_true",
                   help="the predictor pools its feature map by the maximum, not the mean")
    p.add_argument("--discriminator-layers", type=int,
                   help="PatchGAN layers (default: the small preset's, 2: 34 px patches; 3: 70 px)")
    p.add_argument("--head-depth", type=int,
                   help="rings of the depth from the head's edge that the discriminators see (default 0: off)")
    p.add_argument("--depth-from-input", action="store_true",
                   help="the discriminators judge each translation by the depth map of the image it came from, "
                        "not its own (needs --head-depth)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--image-size", type=int, help="network input size in pixels (default: the small preset's, 64)")
    p.add_argument("--cohort-size", choices=("tiny", "small", "full"),
                   help="cohort grid (duiit.head_cohort.PRESETS; default tiny: 64 px, 8 mm slices)")
    p.add_argument("--cohort", help="use the cohort already built in this folder (by --build-cohort-only; "
                                    "for a machine that cannot fetch the sample images)")
    p.add_argument("--build-cohort-only", action="store_true",
                   help="build the cohort into --work/cohort and stop (to carry it to a GPU machine)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared 2-core machine "
                                                          "2 threads were 4-10x slower per step)")
    p.add_argument("--out", help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)}; quick: a temp folder)")
    p.add_argument("--work", help="folder for the cohort and bundles (default: a temp folder)")
    p.add_argument("--cache", help="sample image cache folder (default $DUIIT_CACHE or ~/.cache/duiit)")
    p.add_argument("--tag", default="", help="a name for this run in the results")
    p.add_argument("--notes", default="", help="a sentence recorded with the run (why it was made)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--figure", help="also write OUT/real_images_NAME.png: translations by the first seed's bundles")
    p.add_argument("--fidelity-every", type=int, default=0,
                   help="also measure the paired fidelity every N translator/joint steps (a convergence curve)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="checkpoint each method/seed every N steps under --work/checkpoints; run the same command "
                        "again to resume them (default 0: no checkpoints)")
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.iterations = args.iterations or (3 if args.quick else 250)
    if args.quick:
        args.log_every = 1
    args.out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "duiit-bench-real-quick" if args.quick
                                                else DEFAULT_OUT)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in BASE_METHODS + (ABLATION,)]
    if unknown or not methods:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(BASE_METHODS + (ABLATION,))}")
    args.method_list = methods + ([ABLATION] if args.ablation and ABLATION not in methods else [])
    if args.build_cohort_only and not args.work:
        p.error("--build-cohort-only needs --work (where the cohort is kept)")
    if args.checkpoint_every and not args.work:
        p.error("--checkpoint-every needs --work (where the checkpoints are kept for a resume)")
    if args.checkpoint_every < 0:
        p.error("--checkpoint-every must be 0 (off) or positive")
    shaping = [flag for flag, value in (("--n-ct", args.n_ct), ("--n-mr", args.n_mr), ("--mr-volumes", args.mr_volumes),
                                         ("--ct-train-fraction", args.ct_train_fraction),
                                         ("--cohort-size", args.cohort_size),
                                         ("--mr-lesion-gain", args.mr_lesion_gain),
                                         ("--n-ct-unlabelled", args.n_ct_unlabelled), ("--twins", args.twins))
               if value is not None]
    if args.mr_contrast_jitter and args.no_mr_standard:
        p.error("--mr-contrast-jitter bends the MR standard: it cannot go with --no-mr-standard")
    if args.depth_from_input and not args.head_depth:
        p.error("--depth-from-input judges by the depth map: it needs --head-depth")
    if args.cohort and (shaping or args.cohort_seed or args.build_cohort_only):
        p.error(f"--cohort uses the cohort as it was built; "
                f"{(shaping + ['--cohort-seed/--build-cohort-only'])[0]} cannot change it")
    args.fresh_predictor = args.fresh_predictor and "duiit" in methods
    return args


def run(argv=None) -> dict:
    """Run the benchmark; returns the run record (also written to OUT). Raises Unavailable without images."""
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from duiit.cohort import build_cohort as load_cohort
    from duiit.manifest import read_manifest
    from duiit.device import resolve_device
    from duiit.networks import PRESETS, NetworkConfig
    from duiit.training import Cancelled

    started_wall = time.monotonic()
    work_tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work_tmp = tempfile.TemporaryDirectory(prefix="duiit-bench-real-")
        work = Path(work_tmp.name)
    try:
        spec = dict(QUICK_COHORT if args.quick else FULL_COHORT)
        for key, value in (("n_ct_patients", args.n_ct), ("ct_train_fraction", args.ct_train_fraction),
                           ("n_mr_patients", args.n_mr), ("mr_volumes", args.mr_volumes),
                           ("size", args.cohort_size), ("mr_lesion_gain", args.mr_lesion_gain),
                           ("n_ct_unlabelled", args.n_ct_unlabelled), ("twins", args.twins)):
            if value is not None:
                spec[key] = value
        device, device_message = resolve_device(args.device)
        log(device_message)
        if args.cohort:
            manifest = Path(args.cohort) / "manifest.csv"
            built = json.loads((manifest.parent / COHORT_RECORD).read_text())
            spec, args.cohort_seed = built["spec"], built["cohort_seed"]
            log(f"using the cohort in {manifest.parent} ({spec}, cohort seed {args.cohort_seed})")
        else:
            log(f"building the cohort in {work} ({spec})")
            manifest = make_cohort(work, spec, args.cohort_seed, args.cache)
            if args.build_cohort_only:
                return {"built_cohort": str(manifest.parent), "summary": {}}
        network = NetworkConfig.from_dict(PRESETS["small"].to_dict())
        for key in ("predictor_width", "predictor_depth", "discriminator_layers", "image_size"):
            if getattr(args, key):
                setattr(network, key, getattr(args, key))
        if args.head_depth is not None:
            network.discriminator_head_depth = args.head_depth
        network.predictor_max_pool = int(args.predictor_max_pool)
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))

        def cohort_for(seed):
            """One patient split (seed 0) for every training seed; the jitter's gammas drawn per training
            seed, as `duiit train --seed` draws them (runs before 171 drew one set with seed 0)."""
            return load_cohort(read_manifest(manifest), "MR", "CT", "classification", network.image_size, 0,
                               mr_standard=not args.no_mr_standard, mr_contrast_jitter=args.mr_contrast_jitter,
                               contrast_seed=seed)
        gammas_per_seed = args.mr_contrast_jitter > 0  # parse_args refuses it without the MR standard
        cohort = cohort_for(seeds[0])
        args.manifest_path = manifest
        command = "python -m Testing.benchmarks.real_images " + " ".join(shlex.quote(a) for a in
                                                                        (sys.argv[1:] if argv is None else argv))
        record = {"tag": args.tag or ("quick" if args.quick else "benchmark"), "notes": args.notes,
                  "command": command.strip(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "running",
                  "machine": machine(device),
                  "settings": {"iterations": args.iterations, "batch_size": args.batch_size,
                               "image_size": network.image_size, "network": network.to_dict(),
                               "lambda_task": args.lambda_task, "warmup": args.warmup, "seeds": seeds,
                               "source_weight": args.source_weight, "task_floor": args.task_floor,
                               "lambda_identity": args.lambda_identity, "guide_classes": args.guide_classes,
                               "guide_predictor": args.guide_predictor, "guide_pretrain": args.guide_pretrain,
                               "guide_inverted_lesions": args.guide_inverted_lesions,
                               "guide_erased_lesions": args.guide_erased_lesions,
                               "predictor_erased_lesions": args.predictor_erased_lesions,
                               "predictor_augment": args.predictor_augment,
                               "lambda_structure": args.lambda_structure, "translator_ema": args.translator_ema,
                               "mr_standard": not args.no_mr_standard, "mr_contrast_jitter": args.mr_contrast_jitter,
                               "depth_from_input": args.depth_from_input,
                               "contrast_gammas": "per training seed" if gammas_per_seed else None,
                               "methods": args.method_list + ([FRESH] if args.fresh_predictor else []),
                               "cohort_spec": spec, "cohort_seed": args.cohort_seed, "quick": args.quick},
                  "cohort": cohort_description(manifest, cohort), "records": []}
        previous = load_runs(args.out)
        runs = previous + [record]
        methods = record["settings"]["methods"]
        errors = []
        try:
            for seed in seeds:
                if gammas_per_seed and seed != seeds[0]:
                    cohort = cohort_for(seed)
                for method in args.method_list:
                    log(f"training {method} seed {seed}")
                    try:
                        result = train_one(method, seed, args, cohort, network, device, work)
                        state = result.pop("_translator_state", None)
                        if gammas_per_seed:
                            result["contrast_gammas"] = contrast_gammas(cohort)
                        if method in TRANSLATING:
                            result["fidelity"] = fidelity(result["bundle"], manifest, str(device))
                            result.pop("bundle")
                    except Cancelled:  # a stop asked for by a signal ends the whole run (resumable)
                        raise
                    except Exception as exc:  # keep the other runs; the error is recorded and reported
                        import traceback
                        traceback.print_exc()
                        errors.append(f"{method} seed {seed}: {type(exc).__name__}: {exc}")
                        record["errors"] = errors
                        continue
                    log(f"{method} seed {seed}: AUC {_num(_finite(result['test']['auc']))} accuracy "
                        f"{result['test']['accuracy']:.3f}"
                        + (" paired MAE "
                           f"{result['fidelity']['paired_simulated_mr']['mean'].get('mae_hu', float('nan')):.1f} HU"
                           if result.get("fidelity") else ""))
                    record["records"].append(result)
                    if state is not None:
                        fresh = train_fresh(seed, state, args, cohort, network, device)
                        log(f"{FRESH} seed {seed}: AUC {_num(_finite(fresh['test']['auc']))}")
                        record["records"].append(fresh)
                    record["summary"] = aggregate_run(record["records"], methods)
                    record["wall_seconds"] = round(time.monotonic() - started_wall, 1)
                    write_results(args.out, runs)
        except BaseException as exc:
            record["status"] = f"interrupted ({type(exc).__name__}: {exc})"[:300]
            record["wall_seconds"] = round(time.monotonic() - started_wall, 1)
            write_results(args.out, runs)
            raise
        record["summary"] = aggregate_run(record["records"], methods)
        record["targets"] = targets(record["summary"])
        record["status"] = "complete" if not errors else f"complete with {len(errors)} error(s)"
        record["wall_seconds"] = round(time.monotonic() - started_wall, 1)
        record["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        if args.figure:
            names = [f"{m}-seed{seeds[0]}" for m in args.method_list if m in TRANSLATING]
            names = [n for n in names if (work / "bundles" / f"{n}.duiit").is_file()]
            if names:
                png = args.out / f"{RESULTS_NAME}_{args.figure}.png"
                figure(work, manifest, names, png, str(device))
                record["figure"] = png.name
        write_results(args.out, runs)
        log(f"done in {record['wall_seconds'] / 60:.1f} min; results in {args.out}")
        return record
    finally:
        if work_tmp is not None:
            work_tmp.cleanup()


def main(argv=None) -> int:
    from duiit.training import Cancelled  # imports torch, as run does
    try:
        record = run(argv)
    except Unavailable as exc:
        print(f"real_images: skipped: {exc}", file=sys.stderr)
        return 3
    except Cancelled as exc:
        print("real_images: cancelled; " + (f"the same command resumes from {exc.checkpoint}" if exc.checkpoint
                                            else "without --checkpoint-every there is nothing to resume"),
              file=sys.stderr)
        return 130
    if "built_cohort" in record:
        print(record["built_cohort"])
    for method, entry in record["summary"].items():
        print(f"{method:14s} AUC {_pm(entry, 'auc')}  accuracy {_pm(entry, 'accuracy')}"
              + (f"  twin AUC {_pm(entry, 'twin_auc')}" if entry.get("twin_auc", {}).get("n") else "")
              + (f"  paired MAE {_pm(entry, 'paired_mae_hu', 1)} HU" if "paired_mae_hu" in entry else "")
              + (f" ({_pm(entry, f'paired_{AVERAGED_VIEWS}_views_mae_hu', 1)} HU over {AVERAGED_VIEWS} views)"
                 if f"paired_{AVERAGED_VIEWS}_views_mae_hu" in entry else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
