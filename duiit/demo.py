"""`duiit demo`: the embedded default, on real head images from the package registries.

Fetches (and caches) the InVesalius Cranium CT, the Colin27 T1 MR and the pyradiomics brain MRs, builds a
labelled head MR -> CT set (lesion present/absent per slice; lesions simulated in both modalities), trains
DUIIT (small preset) on the CPU, translates one whole MR volume and writes an HTML report with the source,
translated and real CT side by side, HU histograms per tissue, loss curves and the predictor's metrics.
`--quick` runs the same on synthetic phantoms in about a minute (for tests, and machines without the images).
"""

import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .bundle import load_bundle
from .device import resolve_device
from .errors import DuiitError
from .fidelity import BRAIN_HU, TARGET_MAE_HU, flat_grey_head, head_mask, paired_fidelity, tissue_statistics
from .manifest import read_manifest
from .networks import PRESETS, NetworkConfig
from .progress import Progress
from .report import examples_figure, hu_histogram_figure, table, write_page
from .training import TrainingOptions
from .training_job import run_training
from .translate import translate_volume
from .volume_io import read_volume, write_volume

DEMO_ITERATIONS = 600
# Unlabelled CT patients: they teach the translator what CT looks like (no predictor sees them); more CT for the
# translator was the largest gain in translation fidelity on the real-image benchmark (its runs 62-69).
DEMO_UNLABELLED_CT = 15
CT_WINDOW = (-160.0, 240.0)   # brain window for the side-by-side figure


def run_demo(output="duiit-demo", iterations=None, quick=False) -> Path:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say = lambda text: print(f"[demo] {text}", flush=True)  # noqa: E731
    manifest, check_manifest, data_note = _make_data(output / "data", quick, say)
    network = NetworkConfig.from_dict(PRESETS["small"].to_dict())
    if quick:
        network.image_size, network.generator_blocks = 32, 1
    options = TrainingOptions(method="duiit", task="classification", source="MR", target="CT",
                              iterations=iterations or (30 if quick else DEMO_ITERATIONS), batch_size=4,
                              checkpoint_every=100, seed=0)
    say(f"training DUIIT for {options.iterations} iterations ({resolve_device('auto')[1]})")
    result = run_training(manifest, output / "model.duiit", options, network, device="auto",
                          progress=Progress(), report_dir=output / "training_report")
    bundle = load_bundle(output / "model.duiit")
    cases = read_manifest(manifest)
    source = next(c for c in cases if c.modality == "MR")
    real = next((c for c in cases if c.modality == "CT" and c.split == "test"), next(c for c in cases
                                                                                    if c.modality == "CT"))
    say(f"translating the whole MR volume {source.path.name}")
    mr_image = read_volume(source.path)
    translation = translate_volume(bundle, mr_image, device="auto", with_error_map=True)
    write_volume(translation.ct, output / "translated_ct.nii.gz")
    write_volume(translation.error_map, output / "translated_error_map.nii.gz")
    paired = _paired_check(bundle, check_manifest) if check_manifest else None
    report = _write_report(output, bundle.header, mr_image, translation, read_volume(real.path), paired,
                           result, data_note, source, real)
    summary = {"data": data_note, "bundle": str(output / "model.duiit"), "report": str(report),
               "translated": str(output / "translated_ct.nii.gz"), "metrics": result.get("metrics"),
               "paired_check": paired, "device": translation.device,
               "seconds": round(time.monotonic() - started, 1)}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    say(f"done in {summary['seconds']} s: open {report}")
    return report


def _make_data(folder: Path, quick: bool, say):
    if quick:
        from .phantom import write_phantom_cohort
        manifest = write_phantom_cohort(folder, n_ct=6, n_source=8, shape=(12, 32, 32))
        return manifest, None, "synthetic head phantoms (quick mode): CT in HU, T1-like MR, lesion per slice"
    from .head_cohort import build_cohort
    say("fetching the real head images (cached after the first run) and building the cohort")
    try:
        manifest = build_cohort(folder, n_ct_patients=6, n_mr_patients=9, seed=0, size="tiny", n_check=1,
                                ct_train_fraction=0.5, n_ct_unlabelled=DEMO_UNLABELLED_CT, progress=None)
    except DuiitError as exc:
        raise DuiitError(f"the demo needs the real sample images: {exc} (duiit demo --quick runs on phantoms)") from None
    note = ("real head images: InVesalius Cranium CT (1 real CT, augmented into 6 labelled patients and "
            f"{DEMO_UNLABELLED_CT} unlabelled ones that only the translator sees), Colin27 and "
            "pyradiomics brain1/brain2 T1 MR (3 real MRs, augmented into 9 patients); lesions simulated "
            "(hyperdense in CT, hyperintense in T1); the paired check MR is simulated from real CT")
    check = folder / "check_manifest.csv"
    return manifest, check if check.exists() else None, note


def _paired_check(bundle, check_manifest) -> dict:
    """Fidelity against real CT on the check case whose MR was simulated from that CT."""
    import csv
    row = next(csv.DictReader(open(check_manifest)))
    folder = Path(check_manifest).parent
    translation = translate_volume(bundle, read_volume(folder / row["path"]), device="auto")
    real = sitk.GetArrayFromImage(read_volume(folder / row["paired_ct"]))
    head = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["head_mask"]))) > 0
    constant = paired_fidelity(flat_grey_head(head), real, head)["mae_hu"]
    return {"case": row["patient_id"], "note": "MR simulated from held-out real CT",
            **paired_fidelity(sitk.GetArrayFromImage(translation.ct), real, head),
            "constant_head_mae_hu": constant}


def _at_a_glance(translated: dict, real: dict, paired, metrics: dict) -> str:
    """The report's verdict in three lines: HU per tissue, the paired error against what painting the head
    one grey scores, and the predictor's AUC on real CT."""
    mean = lambda stats: f"{stats['mean_hu']:.0f}" if stats["fraction"] else "none"  # noqa: E731
    tissues = ", ".join(f"{name} {mean(translated[name])} / {mean(real[name])} HU" for name in translated)
    items = [f"<li>Mean HU per tissue, translated / real CT: {tissues}; bone is "
             f"{translated['bone']['fraction']:.0%} / {real['bone']['fraction']:.0%} of the head.</li>"]
    if paired:
        mae, constant = paired["mae_hu"], paired["constant_head_mae_hu"]
        if mae <= TARGET_MAE_HU:
            verdict, css = "within the target: the translation puts the tissues where its CT has them", "good"
        elif mae < constant:
            verdict, css = "it places the tissues better than a flat grey head, but not within the target", "bad"
        else:
            verdict, css = "worse than a flat grey head, so it does not put the tissues where its CT has them", "bad"
        items.append(f'<li class="{css}">Paired check: MAE {mae:.0f} HU inside the head ({constant:.0f} HU for '
                     f"painting the whole head {BRAIN_HU:.0f} HU; target {TARGET_MAE_HU:.0f} HU): {verdict}.</li>")
    split = "test" if "test" in metrics else next(iter(metrics), None)
    scores = (metrics.get(split) or {}).get("slice")
    if scores:
        items.append(f"<li>Predictor on real CT only: slice AUC {scores['auc']:.3f} over {scores['n']} {split} "
                     "slices.</li>")
    return "<h2>At a glance</h2><ul>" + "".join(items) + "</ul>"


def _middle_slices(array: np.ndarray, count=3):
    informative = np.nonzero((array > np.percentile(array, 60)).mean(axis=(1, 2)) > 0.05)[0]
    if not informative.size:
        informative = np.arange(array.shape[0])
    return [int(informative[int(f * (len(informative) - 1))]) for f in np.linspace(0.25, 0.75, count)]


def _write_report(output: Path, header, mr_image, translation, real_ct, paired, result, data_note, source, real):
    mr = sitk.GetArrayFromImage(mr_image)
    ct = sitk.GetArrayFromImage(translation.ct)
    real_hu = sitk.GetArrayFromImage(real_ct)
    error = sitk.GetArrayFromImage(translation.error_map)
    mr_range = tuple(np.percentile(mr, [1, 99.5]))
    rows = []
    for k in _middle_slices(ct):
        k_real = int(round(k * (real_hu.shape[0] - 1) / max(ct.shape[0] - 1, 1)))
        rows.append((f"slice {k}", [("source MR", mr[k], mr_range), ("translated CT", ct[k], CT_WINDOW),
                                    (f"real CT ({real.patient_id})", real_hu[k_real], CT_WINDOW),
                                    ("translated, bone window", ct[k], (-500, 1500)),
                                    ("cycle error |F(G(s))-s|", error[k], (0, 0.5))]))
    examples_figure(rows, output / "side_by_side.png")
    translated_head, real_head = head_mask(ct), head_mask(real_hu)
    hu_histogram_figure(ct, real_hu, translated_head, real_head, output / "hu_histograms.png")
    stats_t, stats_r = tissue_statistics(ct, translated_head), tissue_statistics(real_hu, real_head)
    tissue_rows = [[name, stats_t[name]["mean_hu"], stats_r[name]["mean_hu"], stats_t[name]["fraction"],
                    stats_r[name]["fraction"]] for name in stats_t]
    metrics = result.get("metrics") or {}
    metric_rows = [[split, level, k, v] for split, levels in metrics.items() for level, values in levels.items()
                   for k, v in values.items()]
    paired_html = ""
    if paired:
        paired_html = ("<h2>Paired check (MR simulated from held-out real CT)</h2>"
                       + table(["MAE inside head (HU)", "PSNR (dB, 4000 HU range)", "SSIM"],
                               [[paired["mae_hu"], paired["psnr_db"], paired["ssim"]]])
                       + table(["tissue (real CT class)", "real mean HU", "translated mean HU", "MAE HU"],
                               [[n, t["real_mean_hu"], t["translated_mean_hu"], t["mae_hu"]]
                                for n, t in paired["tissues"].items()]))
    glance = _at_a_glance(stats_t, stats_r, paired, metrics)
    body = f"""<p><b>Data:</b> {data_note}.</p>
<p><b>Model:</b> method {header['method']}, {header['training']['steps']} iterations in
{header['training']['seconds']} s on {translation.device}; network {header['network']['image_size']} px,
{header['network']['generator_blocks']} residual blocks. Bundle: <code>model.duiit</code>;
training report: <a href="training_report/report.html">training_report/report.html</a>.</p>
{glance}
<h2>Source, translated and real CT</h2>
<p>The whole MR volume <code>{source.path.name}</code> was translated; the translated CT keeps its size, spacing,
origin and direction. The real CT is another patient (unpaired), shown at the same relative height.</p>
<img src="side_by_side.png" style="max-width:100%">
<h2>Does it look like CT? HU per tissue</h2>
<p>Histograms inside the head; classes by HU on each image (air &lt; -400, soft tissue -400..300, bone &gt; 300).</p>
<img src="hu_histograms.png" style="max-width:100%">
{table(["tissue", "translated mean HU", "real CT mean HU", "translated fraction", "real fraction"], tissue_rows)}
{paired_html}
<h2>Predictor (evaluated on real CT only)</h2>
{table(["split", "level", "metric", "value"], metric_rows)}
<h2>Losses</h2><img src="training_report/losses.png" style="max-width:100%">"""
    return write_page(output / "report.html", "DUIIT demo: head MR -> CT", body)
