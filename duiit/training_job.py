"""A whole training job: manifest -> cohort -> trainer -> validated bundle (+ report), with resume and cancel."""

import time
from pathlib import Path

import numpy as np

from .bundle import save_bundle
from .checkpoint import checkpoint_path
from .cohort import build_cohort
from .device import resolve_device
from .distributed import finish, init_distributed, unwrap
from .errors import DuiitError
from .manifest import read_manifest
from .networks import NetworkConfig
from .normalisation import MR_LANDMARK_PERCENTILES, fit_normalisation
from .prediction import __doc__ as AGGREGATION_DOC
from .training import Trainer, TrainingOptions


def run_training(manifest, output, options: TrainingOptions, network: NetworkConfig, device="auto",
                 resume=False, progress=None, report_dir=None, classes=None) -> dict:
    """Train and write the bundle at `output`; returns {"bundle", "metrics", "report", "device"}."""
    output = Path(output)
    _check_output(output)
    torch_device, device_message = resolve_device(device)
    context = init_distributed(torch_device)
    try:
        cases = read_manifest(manifest)
        if progress and context.is_main:
            progress.event("loading", cases=len(cases), message=f"reading {len(cases)} volumes")
        cohort = build_cohort(cases, options.source, options.target, options.task, network.image_size,
                              options.seed, classes=classes, mr_standard=options.mr_standard,
                              mr_contrast_jitter=options.mr_contrast_jitter)
        if len(cohort.source_train) == 0 and options.method != "target-only":
            raise DuiitError(f"method {options.method} needs {options.source} cases; the manifest has none")
        trainer = Trainer(cohort, options, network, torch_device, context, progress, checkpoint_path(output))
        if progress and context.is_main:
            progress.event("start", method=options.method, device=str(torch_device), device_message=device_message,
                           total_iterations=trainer.total_steps, world_size=context.world_size,
                           counts=cohort.summary["counts"], resume=bool(resume))
        started = time.monotonic()
        trainer.run(resume=resume)
        result = {"bundle": str(output), "device": str(torch_device), "report": None}
        if context.is_main:
            metrics = trainer.evaluate()
            header = bundle_header(cohort, options, network, metrics, trainer, time.monotonic() - started,
                                   context.world_size)
            modules = {"predictor": unwrap(trainer.predictor)}
            if trainer.translator is not None:
                modules["translator"] = trainer.deployed_translator()
            save_bundle(output, header, modules)
            result["metrics"] = metrics
            if report_dir:
                from .report import write_training_report
                result["report"] = str(write_training_report(report_dir, header, trainer.history, output))
        return result
    finally:
        finish(context)


def _check_output(output: Path):
    if output.is_dir():
        raise DuiitError(f"{output}: is a folder; give a bundle file name such as model.duiit")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise DuiitError(f"{output}: cannot be written ({parent} is not a folder)")


def source_normalisation_header(source: str, methods: list, standard) -> dict:
    """How the bundle's source volumes are normalised; with the MR histogram standard their translation
    maps each volume to (normalisation.standardise_record)."""
    mr = "foreground median" + (", then histogram landmarks to the standard" if standard else "")
    header = {"method": "suv if the DICOM tags allow, else percentile" if source == "PT" else
              f"{mr} (percentiles without a foreground)", "used_in_training": methods}
    if standard:
        header["standard"] = {"percentiles": list(MR_LANDMARK_PERCENTILES), "unit": list(standard)}
    return header


def bundle_header(cohort, options: TrainingOptions, network: NetworkConfig, metrics, trainer, seconds,
                  world_size) -> dict:
    source_methods = sorted({r["normalisation"]["method"] for r in cohort.summary["cases"]
                             if r["modality"] == options.source})
    return {
        "source_modality": options.source, "target_modality": options.target, "task": options.task,
        "label_names": cohort.label_names, "method": options.method, "guidance": options.guidance,
        "regression_scale": list(cohort.regression_scale),
        "normalisation": {"target": fit_normalisation(np.zeros(1), "CT"),
                          "source": source_normalisation_header(options.source, source_methods,
                                                                cohort.source_standard)},
        "network": network.to_dict(),
        "training": {**options.fingerprint(), "steps": trainer.step, "seconds": round(seconds, 1),
                     "world_size": world_size},
        "aggregation": AGGREGATION_DOC.strip().split("\n\n")[1].replace("\n", " "),
        "data_summary": cohort.summary,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
