"""The `duiit` command line: index, train, translate, predict, export, demo."""

import argparse
import json
import sys
from pathlib import Path

from .errors import DuiitError
from .training_options import (GUIDE_PREDICTORS, METHODS, SOURCE_MODALITIES, TARGET_MODALITIES, TASKS,
                               TrainingOptions, check_guide_options)
from .view_averaging import VIEW_COUNTS

EXIT_ERROR, EXIT_CANCELLED = 2, 130
DEFAULTS = TrainingOptions()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duiit", description="Cross-modality data augmentation: translate MR/PET "
                                     "to CT-like images, trained jointly with a CT predictor.")
    sub = parser.add_subparsers(dest="command", required=True)
    compute = argparse.ArgumentParser(add_help=False)
    compute.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice less the "
                         "cores other work keeps busy, measured at the start)")

    p = sub.add_parser("index", help="list the DICOM series under a folder as a manifest CSV (labels empty)")
    p.add_argument("dicom_dir")
    p.add_argument("-o", "--output", required=True)

    p = sub.add_parser("train", parents=[compute], help="train translator + predictor (or a baseline) and write a model bundle")
    p.add_argument("--manifest", required=True)
    p.add_argument("--source", choices=SOURCE_MODALITIES, required=True)
    p.add_argument("--target", choices=TARGET_MODALITIES, default="CT")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--method", choices=METHODS, default="duiit")
    p.add_argument("-o", "--output", required=True, help="the model bundle to write, e.g. model.duiit")
    p.add_argument("--preset", choices=["reference", "small"], default="reference",
                   help="network size: reference = CycleGAN (9 blocks, 256 px); small = CPU-sized (3 blocks, 64 px)")
    p.add_argument("--image-size", type=int, help="slice size in pixels (overrides the preset)")
    p.add_argument("--generator-width", type=int)
    p.add_argument("--generator-blocks", type=int)
    p.add_argument("--head-depth", type=int,
                   help="the discriminators also see each pixel's depth from the head's outer edge, in rings of "
                        "network pixels up to this many (default 0: off; 10 at the small preset's 64 px: a "
                        "truer translation, and on the benchmark a lower AUC for duiit's own predictor)")
    p.add_argument("--depth-from-input", action="store_true",
                   help="with --head-depth: the discriminators judge each translation by the depth map of the image "
                        "it came from, so a scalp translated to air shows as air inside the head (on the 2 mm "
                        "benchmark a lower paired MAE; default: each image by its own outline)")
    p.add_argument("--lambda-identity", type=float, default=DEFAULTS.lambda_identity,
                   help=f"weight of the identity loss, times the cycle weight (default {DEFAULTS.lambda_identity:g}, "
                        "as in CycleGAN; 0: off)")
    p.add_argument("--iterations", type=int, default=DEFAULTS.iterations)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--lambda-task", type=float, default=DEFAULTS.lambda_task,
                   help="weight of the predictor's loss in G's loss")
    p.add_argument("--warmup", type=float, default=DEFAULTS.warmup,
                   help="fraction of iterations before guidance starts")
    p.add_argument("--lambda-structure", type=float, default=DEFAULTS.lambda_structure,
                   help=f"weight of the MIND structure consistency loss of G and F (default "
                        f"{DEFAULTS.lambda_structure:g}: off)")
    p.add_argument("--translator-ema", type=float, default=DEFAULTS.translator_ema,
                   help=f"decay of the moving average of G/F's weights that the bundle keeps (default "
                        f"{DEFAULTS.translator_ema:g}; 0: the last weights)")
    p.add_argument("--no-guidance", action="store_true", help="ablation: detach G(source) before the predictor")
    p.add_argument("--task-floor", type=float, default=DEFAULTS.task_floor,
                   help="count G's task loss per slice only above this (e.g. 0.2), so G stops exaggerating "
                        f"what the predictor already finds (default {DEFAULTS.task_floor:g}: the plain loss)")
    p.add_argument("--guide-classes", default=DEFAULTS.guide_classes,
                   help="classification: only source slices of these classes (comma-separated, e.g. lesion) "
                        "steer the translator (default: all), so it keeps what the predictor needs without "
                        "wiping the rest")
    p.add_argument("--guide-predictor", choices=GUIDE_PREDICTORS, default=DEFAULTS.guide_predictor,
                   help="which predictor steers the translator: joint (default, trained on real and translated "
                        "images, as in the paper) or target (a second one trained on real target images only, "
                        "so the translator cannot invent a code that only the joint predictor reads)")
    p.add_argument("--guide-pretrain", type=int, default=DEFAULTS.guide_pretrain, metavar="STEPS",
                   help="with --guide-predictor target: train that guide on real target images alone for this many "
                        "steps before the joint phase, so it has learnt the task before it steers the translator "
                        f"(default {DEFAULTS.guide_pretrain}: off)")
    p.add_argument("--guide-inverted-lesions", action="store_true",
                   help="with --guide-predictor target and target cases with lesion masks: that guide also learns "
                        "each training lesion mirrored about the tissue around it (bright drawn dark), labelled "
                        "background, so it steers the translator towards lesions with the target's own sign "
                        "(default: off)")
    p.add_argument("--guide-erased-lesions", action="store_true",
                   help="with source cases with lesion masks: the guide also judges each guided source lesion slice "
                        "translated with its lesion erased (filled from the tissue around it), as background, so "
                        "the translator can satisfy the guide only through what it draws for the lesion, not by "
                        "what it draws on every slice at that level (default: off)")
    p.add_argument("--predictor-erased-lesions", action="store_true",
                   help="with --guide-erased-lesions: the predictor also learns those erased translations as "
                        "background, so that it finds the lesion G draws rather than what G draws on every slice "
                        "at that level (default: off)")
    p.add_argument("--predictor-augment", action="store_true",
                   help="mirror the predictor's training slices left-right and shift them by up to 1/16 of the image "
                        "at random, so that with few labelled patients it learns what a finding looks like rather "
                        "than where each patient's findings lie (default: off)")
    p.add_argument("--no-mr-standard", action="store_true",
                   help="keep each MR volume's own histogram shape (two-point scaling only) instead of mapping it "
                        "onto the training MR volumes' standard; for MR from one scanner, where the standard "
                        "adds nothing to training (default: map, and the bundle maps every MR it translates)")
    p.add_argument("--mr-contrast-jitter", type=float, default=DEFAULTS.mr_contrast_jitter, metavar="G",
                   help="map each training MR volume onto the standard bent by a gamma of its own, drawn from "
                        "[1-G, 1+G], so that the standard aligns scanners without making every volume alike "
                        f"(e.g. 0.15; default {DEFAULTS.mr_contrast_jitter:g}: off; translation always maps onto the "
                        "plain standard; not with --no-mr-standard)")
    p.add_argument("--classes", help="comma-separated class names (default: the labels found)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
    p.add_argument("--progress-json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--report", help="folder for an HTML report")

    p = sub.add_parser("translate", parents=[compute], help="translate an MR/PET volume to a CT-like volume in HU")
    p.add_argument("bundle")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--error-map", help="also write the cycle-reconstruction error |F(G(s)) - s|")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the predictor's outputs as JSON")
    p.add_argument("--views", type=int, default=1, choices=VIEW_COUNTS,
                   help="average the translation over this many mirrored / shifted views of each slice: closer "
                        "HU, smoother texture, one translator pass per view (default 1)")

    p = sub.add_parser("predict", parents=[compute], help="the predictor's outputs for a CT or CT-like volume")
    p.add_argument("bundle")
    p.add_argument("input")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", parents=[compute], help="translate the source cases of a manifest; writes volumes + labels.csv")
    p.add_argument("bundle")
    p.add_argument("--manifest", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--device", default="auto")

    p = sub.add_parser("demo", parents=[compute], help="make a small data set, train, translate and write a report")
    p.add_argument("-o", "--output", default="duiit-demo")
    p.add_argument("--iterations", type=int)
    p.add_argument("--quick", action="store_true", help="a one-minute version (for tests)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    json_errors = getattr(args, "progress_json", False)
    try:
        if hasattr(args, "threads"):  # the commands that compute
            if args.threads is not None and args.threads < 1:
                raise DuiitError(f"--threads {args.threads}: must be at least 1")
            import torch

            from .device import default_cpu_threads
            torch.set_num_threads(args.threads or default_cpu_threads())
        return COMMANDS[args.command](args) or 0
    except DuiitError as exc:
        if json_errors:
            print(json.dumps({"event": "error", "message": str(exc)}), flush=True)
        print(f"duiit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("duiit: interrupted", file=sys.stderr)
        return EXIT_CANCELLED


def cmd_index(args):
    from .dicom_index import FolderDicomDatabase, list_series, manifest_rows
    from .manifest import write_manifest
    series = list_series(FolderDicomDatabase(args.dicom_dir))
    if not series:
        raise DuiitError(f"{args.dicom_dir}: no DICOM image series found")
    write_manifest(manifest_rows(series), args.output)
    print(f"{len(series)} series written to {args.output}")


def cmd_train(args):
    from .networks import PRESETS, NetworkConfig
    from .progress import Progress
    from .training import Cancelled
    from .training_job import run_training
    network = NetworkConfig.from_dict(PRESETS[args.preset].to_dict())
    for name in ("image_size", "generator_width", "generator_blocks"):
        if getattr(args, name):
            setattr(network, name, getattr(args, name))
    if args.head_depth is not None:
        if not 0 <= args.head_depth <= 256:
            raise DuiitError(f"--head-depth {args.head_depth}: must be from 0 to 256 rings")
        network.discriminator_head_depth = args.head_depth
    if args.depth_from_input and not network.discriminator_head_depth:
        raise DuiitError("--depth-from-input judges by the head depth map: it needs --head-depth above 0")
    if not args.lambda_identity >= 0:
        raise DuiitError(f"--lambda-identity {args.lambda_identity}: must be 0 or more")
    if network.image_size < 16 or network.image_size % 4:
        raise DuiitError(f"--image-size {network.image_size}: must be a multiple of 4, at least 16")
    if args.iterations < 1 or args.batch_size < 1 or args.checkpoint_every < 1:
        raise DuiitError("--iterations, --batch-size and --checkpoint-every must be positive")
    if not args.task_floor >= 0:
        raise DuiitError(f"--task-floor {args.task_floor}: must be 0 or more")
    if not args.lambda_structure >= 0:
        raise DuiitError(f"--lambda-structure {args.lambda_structure}: must be 0 or more")
    if not 0 <= args.translator_ema < 1:
        raise DuiitError(f"--translator-ema {args.translator_ema}: must be 0 (off) or more, and below 1")
    if not 0 <= args.mr_contrast_jitter < 1:
        raise DuiitError(f"--mr-contrast-jitter {args.mr_contrast_jitter}: must be 0 (off) or more, and below 1")
    if args.mr_contrast_jitter and (args.no_mr_standard or args.source != "MR"):
        raise DuiitError("--mr-contrast-jitter bends the MR standard: it needs an MR source and no --no-mr-standard")
    options = TrainingOptions(method=args.method, task=args.task, source=args.source, target=args.target,
                              iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                              lambda_task=args.lambda_task, warmup=args.warmup, guidance=not args.no_guidance,
                              task_floor=args.task_floor, guide_classes=args.guide_classes,
                              guide_predictor=args.guide_predictor, guide_pretrain=args.guide_pretrain,
                              guide_inverted_lesions=args.guide_inverted_lesions,
                              guide_erased_lesions=args.guide_erased_lesions,
                              predictor_erased_lesions=args.predictor_erased_lesions,
                              predictor_augment=args.predictor_augment, lambda_structure=args.lambda_structure,
                              translator_ema=args.translator_ema, checkpoint_every=args.checkpoint_every,
                              seed=args.seed, mr_standard=not args.no_mr_standard,
                              mr_contrast_jitter=args.mr_contrast_jitter, lambda_identity=args.lambda_identity,
                              depth_from_input=args.depth_from_input)
    check_guide_options(options)  # here, before the cohort is read (minutes), as well as in the Trainer
    progress = Progress(json_lines=args.progress_json)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        result = run_training(args.manifest, args.output, options, network, args.device, args.resume, progress,
                              args.report, classes)
    except DuiitError:
        progress.close()
        raise
    except Cancelled as stop:
        progress.close()
        progress.event("cancelled", checkpoint=str(stop.checkpoint))
        if not args.progress_json:
            print(f"duiit: cancelled; resume with --resume (checkpoint {stop.checkpoint})", file=sys.stderr)
        return EXIT_CANCELLED
    progress.event("done", bundle=result["bundle"], metrics=result.get("metrics"), report=result["report"])
    if not args.progress_json:
        print(f"model bundle written to {result['bundle']}")
        print(json.dumps(result.get("metrics", {}), indent=1))


def _read_input(path):
    from .dicom_series import find_series
    from .volume_io import read_volume
    tags = find_series(path).tags if Path(path).is_dir() else None
    return read_volume(path), tags


def cmd_translate(args):
    from .bundle import load_bundle
    from .device import resolve_device
    from .translate import translate_volume
    from .volume_io import write_volume
    bundle = load_bundle(args.bundle)
    image, tags = _read_input(args.input)
    source = bundle.header["source_modality"]
    if tags and tags.get("Modality") and tags["Modality"] != source:
        raise DuiitError(f"{args.input}: is a {tags['Modality']} series but {args.bundle} translates {source}")
    device, message = resolve_device(args.device)
    print(f"duiit: {message}", file=sys.stderr)
    result = translate_volume(bundle, image, device=device, series_tags=tags, with_error_map=bool(args.error_map),
                              views=args.views)
    if args.error_map:
        write_volume(result.error_map, args.error_map, dicom_tags={"Modality": "OT", "SeriesDescription":
                                                                   "DUIIT cycle error"})
    write_volume(result.ct, args.output, dicom_tags=_derived_tags(tags))
    _print_prediction(result.prediction, args.json, f"translated {args.input} -> {args.output}")


def _derived_tags(tags):
    if not tags:
        return {}
    keep = {k: tags[k] for k in ("PatientID", "PatientName", "StudyInstanceUID") if k in tags}
    return {**keep, "Modality": "CT", "SeriesDescription": f"DUIIT CT-like from {tags.get('Modality', '')}"}


def cmd_predict(args):
    from .bundle import load_bundle
    from .translate import predict_volume
    bundle = load_bundle(args.bundle)
    image, tags = _read_input(args.input)
    if tags and tags.get("Modality") not in (None, "CT"):
        raise DuiitError(f"{args.input}: is a {tags['Modality']} series; predict takes CT or CT-like volumes "
                         "(translate it first)")
    _print_prediction(predict_volume(bundle, image, args.device), args.json, str(args.input))


def _print_prediction(prediction, as_json, title):
    if as_json:
        print(json.dumps(prediction))
        return
    volume = prediction["volume"]
    if prediction["task"] == "classification":
        probabilities = ", ".join(f"{n}={p:.3f}" for n, p in zip(prediction["label_names"], volume["probabilities"]))
        print(f"{title}: {volume['label']} ({probabilities}; mean over {len(prediction['slices'])} slices)")
    else:
        print(f"{title}: {volume['value']:.3f} (mean over {len(prediction['slices'])} slices)")


def cmd_export(args):
    from .bundle import load_bundle
    from .export import export_cohort
    bundle = load_bundle(args.bundle)

    def report(n, total, case, error):
        print(f"[{n}/{total}] {case.name}: {'skipped: ' + error if error else 'ok'}", file=sys.stderr)

    result = export_cohort(bundle, args.manifest, args.output, args.device, report)
    print(f"{len(result['written'])} volumes written to {args.output} (labels.csv); {len(result['failed'])} skipped")
    if result["failed"]:
        for name, message in result["failed"]:
            print(f"duiit: skipped {name}: {message}", file=sys.stderr)
        return 1


def cmd_demo(args):
    from .demo import run_demo
    run_demo(args.output, iterations=args.iterations, quick=args.quick)


COMMANDS = {"index": cmd_index, "train": cmd_train, "translate": cmd_translate, "predict": cmd_predict,
            "export": cmd_export, "demo": cmd_demo}
