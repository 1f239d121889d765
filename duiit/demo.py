"""`duiit demo`: the embedded default. Makes a small head MR -> CT data set, trains DUIIT (small preset) on
the CPU, translates one whole MR volume and writes an HTML report a person can judge at a glance."""

import json
import time
from pathlib import Path

from .bundle import load_bundle
from .device import resolve_device
from .manifest import read_manifest
from .networks import PRESETS, NetworkConfig
from .progress import Progress
from .training import TrainingOptions
from .training_job import run_training
from .translate import translate_volume
from .volume_io import read_volume, write_volume


def run_demo(output="duiit-demo", iterations=None, quick=False) -> Path:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    manifest, data_note = _make_data(output / "data", quick)
    network = NetworkConfig.from_dict(PRESETS["small"].to_dict())
    if quick:
        network.image_size, network.generator_blocks = 32, 1
    options = TrainingOptions(method="duiit", task="classification", source="MR", target="CT",
                              iterations=iterations or (30 if quick else 1500), batch_size=4,
                              checkpoint_every=100, seed=0)
    result = run_training(manifest, output / "model.duiit", options, network, device="auto",
                          progress=Progress(), report_dir=output / "report")
    bundle = load_bundle(output / "model.duiit")
    source_case = next(c for c in read_manifest(manifest) if c.modality == "MR")
    translation = translate_volume(bundle, read_volume(source_case.path), device="auto", with_error_map=True)
    write_volume(translation.ct, output / "translated_ct.nii.gz")
    write_volume(translation.error_map, output / "translated_error_map.nii.gz")
    summary = {"data": data_note, "bundle": str(output / "model.duiit"), "report": result["report"],
               "translated": str(output / "translated_ct.nii.gz"), "metrics": result.get("metrics"),
               "device": resolve_device("auto")[1], "seconds": round(time.monotonic() - started, 1)}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"demo done in {summary['seconds']} s: open {result['report']}")
    return output


def _make_data(folder: Path, quick: bool):
    from .phantom import write_phantom_cohort
    shape = (12, 32, 32) if quick else (24, 64, 64)
    manifest = write_phantom_cohort(folder, n_ct=6, n_source=10, shape=shape)
    return manifest, "synthetic head phantoms (CT in HU, T1-like MR), lesion present/absent per slice"
