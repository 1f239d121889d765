"""DUIIT Train's worker protocol with the real worker (`python -m duiit train --progress-json`) on tiny
generated data: read its JSON events, cancel it, find the checkpoint and no bundle, resume it to the end.
The loss plot (real MRML table, plot series and chart nodes) is fed from the same events."""

import os
import sys
import time
from pathlib import Path

import pytest

from slicer_helpers import scene  # noqa: F401  (fixture)


# One compute thread per worker: tiny networks do not gain from more, and on a busy 2-core machine
# OpenMP threads spinning against other processes make each step many times slower.
WORKER = {"python": sys.executable, "env": {**os.environ, "OMP_NUM_THREADS": "1"}}


def pump(worker, monitor, plot=None, until=lambda events: False, timeout=120.0):
    """Poll as the panel's QTimer does until `until(all events so far)` or the worker exits."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = worker.poll()
        for event in new:
            monitor.handle(event)
            if plot is not None:
                plot.add(event)
        events += new
        if until(events) or any(e["event"] == "exit" for e in new):
            return events
        time.sleep(0.02)
    raise AssertionError(f"timed out; events so far: {[e['event'] for e in events]}; "
                         f"stderr: {list(worker.stderr_tail)[-5:]}")


def test_cancel_keeps_checkpoint_and_no_bundle_then_resume(scene, tmp_path):
    from DUIITTrainLib.plot import LossPlot
    from DUIITTrainLib.worker import TrainingMonitor, TrainingWorker
    from DUIITTranslateLib.testing import tiny_train_arguments, write_tiny_cohort

    manifest = write_tiny_cohort(tmp_path / "data")
    output = tmp_path / "out" / "model.duiit"
    checkpoint = Path(str(output) + ".ckpt")
    # 20 tiny iterations take seconds; the cancel comes right after the first progress event.
    args = tiny_train_arguments(manifest, output, extra=["--iterations", "20", "--checkpoint-every", "1000"])
    worker = TrainingWorker(**WORKER)
    monitor, plot = TrainingMonitor(), LossPlot(scene=scene)
    worker.start(args)
    assert worker.is_running and worker.command[1:4] == ["-m", "duiit", "train"]
    assert worker.command[-1] == "--progress-json"

    events = pump(worker, monitor, plot, until=lambda ev: any(e["event"] == "progress" for e in ev))
    kinds = [e["event"] for e in events]
    assert "start" in kinds and kinds.index("start") < kinds.index("progress")
    start = events[kinds.index("start")]
    assert start["device"] == "cpu" and start["total_iterations"] == 20
    progress = events[kinds.index("progress")]
    assert progress["phase"] in ("joint", "translator", "predictor") and progress["total"] >= 1
    assert isinstance(progress["eta_s"], (int, float)) and progress["losses"]
    assert monitor.state == "running" and 0 < monitor.fraction < 1 and "ETA" in monitor.status_text()
    assert not checkpoint.exists()  # --checkpoint-every 1000: only a cancel writes one before the end

    assert worker.cancel()
    events = pump(worker, monitor, plot)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "exit" and events[-1]["returncode"] == 130 == worker.returncode
    cancelled = next(e for e in events if e["event"] == "cancelled")
    assert Path(cancelled["checkpoint"]).resolve() == checkpoint.resolve()
    assert checkpoint.is_file() and checkpoint.stat().st_size > 0
    assert not output.exists()  # no partial bundle
    assert not any(p.name.startswith(f".{output.name}") for p in output.parent.iterdir())  # nor a temporary
    assert monitor.state == "cancelled" and monitor.finished and "Resume" in monitor.status_text()
    assert not worker.is_running and worker.poll() == []  # "exit" is reported once
    saved_at = max(e["iteration"] for e in events if e["event"] == "checkpoint")
    assert 1 <= saved_at < 20

    rows_before = plot.table.GetNumberOfRows()
    assert rows_before >= 1 and plot.loss_names()
    chart_series = {plot.chart_node.GetNthPlotSeriesNode(n).GetYColumnName()
                    for n in range(plot.chart_node.GetNumberOfPlotSeriesNodes())}
    assert chart_series == set(plot.loss_names())

    resumed, monitor = TrainingWorker(**WORKER), TrainingMonitor()
    resumed.start(args + ["--resume"])
    events = pump(resumed, monitor, plot, timeout=240)
    kinds = [e["event"] for e in events]
    assert events[-1] == {"event": "exit", "returncode": 0}, list(resumed.stderr_tail)[-5:]
    done = next(e for e in events if e["event"] == "done")
    assert Path(done["bundle"]).resolve() == output.resolve() and output.is_file()
    assert next(e for e in events if e["event"] == "start")["resume"] is True
    first_step = min(e["step"] for e in events if e["event"] == "progress")
    assert first_step > saved_at  # continued, not restarted
    assert monitor.state == "done" and monitor.bundle == done["bundle"]
    steps = plot.values("step")
    assert plot.table.GetNumberOfRows() > rows_before and steps == sorted(steps)


def test_worker_error_is_an_event_and_exit_code_2(tmp_path):
    from DUIITTrainLib.worker import EXIT_ERROR, TrainingMonitor, TrainingWorker
    worker = TrainingWorker(**WORKER)
    monitor = TrainingMonitor()
    worker.start(["--manifest", str(tmp_path / "missing.csv"), "--source", "MR", "--task", "classification",
                  "-o", str(tmp_path / "m.duiit")])
    events = pump(worker, monitor)
    error = next(e for e in events if e["event"] == "error")
    assert "missing.csv" in error["message"]
    assert events[-1] == {"event": "exit", "returncode": EXIT_ERROR}
    assert monitor.state == "failed" and "missing.csv" in monitor.message
    assert not (tmp_path / "m.duiit").exists()


def test_cancel_and_poll_without_a_process():
    from DUIITTrainLib.worker import TrainingWorker, worker_options
    worker = TrainingWorker()
    assert worker.python == sys.executable == worker_options()["python"]  # outside Slicer: this Python
    assert worker.poll() == [] and not worker.cancel() and worker.returncode is None and not worker.is_running
    env = worker.environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(__file__).resolve().parents[1])  # finds duiit
    assert env["PYTHONUNBUFFERED"] == "1"


def test_protocol_helpers():
    from DUIITTrainLib.worker import TrainingMonitor, format_duration, parse_line, progress_fraction
    assert parse_line('{"event": "progress", "iteration": 3}') == {"event": "progress", "iteration": 3}
    assert parse_line("Traceback (most recent call last):", "stderr") == {
        "event": "log", "stream": "stderr", "message": "Traceback (most recent call last):"}
    assert parse_line('{"no_event": 1}')["event"] == "log"
    assert parse_line('{"event": "progress"', "stdout")["event"] == "log"  # truncated JSON
    assert [format_duration(s) for s in (None, 4.4, 65, 3600 * 2 + 7 * 60 + 5)] == [
        "unknown", "4 s", "1 min 05 s", "2 h 07 min"]
    assert progress_fraction({"iteration": 5, "total": 10, "step": 15, "total_steps": 20}) == 0.75
    assert progress_fraction({"iteration": 5, "total": 10}) == 0.5
    assert progress_fraction({"iteration": 5, "total": 0}) == 0.0
    monitor = TrainingMonitor()
    monitor.handle({"event": "log", "message": "RuntimeError: CUDA out of memory"})
    monitor.handle({"event": "exit", "returncode": 1})
    assert monitor.state == "failed" and "CUDA out of memory" in monitor.message
    assert "lower the image size" in monitor.message


def test_train_arguments_and_output_layout(tmp_path):
    from DUIITTrainLib.logic import TrainSettings, can_resume, export_arguments, report_page, train_arguments

    from duiit.cli import build_parser
    from duiit.errors import DuiitError
    settings = TrainSettings(output_folder=str(tmp_path), source_modality="PT", task="regression",
                             method="cyclegan", iterations=50, image_size=64, device="cuda")
    args = train_arguments(settings)
    assert args[args.index("--source") + 1] == "PT" and args[args.index("-o") + 1] == str(tmp_path / "model.duiit")
    assert args[args.index("--method") + 1] == "cyclegan" and args[args.index("--image-size") + 1] == "64"
    assert args[args.index("--head-depth") + 1] == "0"  # the panel's default: off
    assert not build_parser().parse_args(["train", *args]).no_mr_standard  # the panel's default: standardise
    assert not build_parser().parse_args(["train", *args]).depth_from_input
    assert not build_parser().parse_args(["train", *args]).predictor_augment
    settings.head_depth, settings.depth_from_input, settings.mr_standard = 10, True, False
    settings.predictor_augment = True
    parsed = build_parser().parse_args(["train", *train_arguments(settings)])  # what `duiit train` will read
    assert (parsed.head_depth, parsed.method, parsed.image_size, parsed.source) == (10, "cyclegan", 64, "PT")
    assert parsed.no_mr_standard and parsed.depth_from_input and parsed.predictor_augment
    assert "--resume" not in args and train_arguments(settings, resume=True)[-1] == "--resume"
    assert export_arguments(settings)[0] == str(settings.model)
    assert not can_resume(settings)
    settings.manifest.write_text("path,modality,label,patient_id\n")
    settings.checkpoint.write_bytes(b"x")
    assert can_resume(settings)
    (tmp_path / "report").mkdir()
    assert report_page(tmp_path / "report") is None
    (tmp_path / "report" / "report.html").write_text("<html></html>")
    assert report_page(tmp_path / "report") == tmp_path / "report" / "report.html"
    with pytest.raises(DuiitError, match="method"):
        TrainSettings(output_folder=str(tmp_path), method="magic").check()
    with pytest.raises(DuiitError, match="output folder"):
        TrainSettings(output_folder=" ").check()
    with pytest.raises(DuiitError, match="head depth 300"):
        TrainSettings(output_folder=str(tmp_path), head_depth=300).check()
    with pytest.raises(DuiitError, match="needs a head depth"):
        TrainSettings(output_folder=str(tmp_path), depth_from_input=True).check()


def test_guidance_settings_reach_duiit_train_and_bad_combinations_are_refused_before_training(tmp_path):
    from DUIITTrainLib.logic import TrainSettings, train_arguments

    from duiit.cli import build_parser
    from duiit.errors import DuiitError
    settings = TrainSettings(output_folder=str(tmp_path))
    parsed = build_parser().parse_args(["train", *train_arguments(settings)])
    assert (parsed.guide_predictor, parsed.guide_classes, parsed.guide_pretrain) == ("joint", "", 0)
    assert not (parsed.guide_inverted_lesions or parsed.guide_erased_lesions or parsed.predictor_erased_lesions)
    settings.guide_predictor, settings.guide_classes, settings.guide_pretrain = "target", " lesion ", 2000
    settings.guide_inverted_lesions = settings.guide_erased_lesions = settings.predictor_erased_lesions = True
    settings.check()
    parsed = build_parser().parse_args(["train", *train_arguments(settings)])
    assert (parsed.guide_predictor, parsed.guide_classes, parsed.guide_pretrain) == ("target", "lesion", 2000)
    assert parsed.guide_inverted_lesions and parsed.guide_erased_lesions and parsed.predictor_erased_lesions
    refused = [(dict(guide_pretrain=500), "--guide-pretrain 500 trains the target guide"),
               (dict(guide_predictor="target", guide_pretrain=500, method="cyclegan"), "not cyclegan"),
               (dict(guide_inverted_lesions=True), "--guide-inverted-lesions teaches the target guide"),
               (dict(guide_predictor="target", guide_inverted_lesions=True, task="regression"), "regression"),
               (dict(guide_classes="lesion", task="regression"), "apply to classification"),
               (dict(guide_erased_lesions=True, method="cyclegan"), "--guide-erased-lesions .* not cyclegan"),
               (dict(predictor_erased_lesions=True), "--predictor-erased-lesions .* give both"),
               (dict(guide_predictor="both"), "guide predictor 'both'")]
    for fields, problem in refused:
        with pytest.raises(DuiitError, match=problem):
            TrainSettings(output_folder=str(tmp_path), **fields).check()


def test_dependency_check_and_device_summary():
    """What the panels check before the first Train/Apply, and the device line they show."""
    import importlib.metadata

    import torch
    from DUIITTrainLib.dependencies import PINNED, constraints_file, device_summary, missing_packages
    assert missing_packages() == []  # this environment has the core's packages
    path = constraints_file()
    try:
        pins = Path(path).read_text().split()
    finally:
        os.remove(path)
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins and len(pins) == len(PINNED)
    assert device_summary("cpu") == ("using the CPU (as requested)", False)
    text, fallback = device_summary("auto")
    if torch.cuda.is_available():
        assert not fallback and "CUDA" in text
    else:
        assert fallback and "CUDA is not available" in text and "CPU" in text
        text, fallback = device_summary("cuda")
        assert fallback and "not available" in text
