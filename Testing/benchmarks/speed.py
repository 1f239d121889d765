"""Speed and memory benchmark: `python -m Testing.benchmarks.speed [--quick] [--device cpu|cuda]`.

In one run on one machine (variants interleaved, round by round, so that a noisy machine hits them
alike; medians quoted):
  1. translation: the project's translate path (duiit.translate.translate_volume) against a plain
     reference (common.reference_translate: one slice at a time, fp32, autograd on, no batching) on a
     256x256x200 volume, at the small preset and at the reference generator (9 blocks, 256 px);
     slices/s, s per volume, and the ratio; at the small preset also with an MR histogram standard in the
     bundle (against the path without one). Both compute the same outputs (CT in HU + the predictor's
     outputs). On the CPU the small preset also runs with 1 torch thread, to show the thread effect.
  2. training: iterations/s of a duiit step (guided joint step: G/F + D + predictor, the task loss on
     G(source) back through G) against a cyclegan step (G/F + D) at the same size, with
     duiit.training.Trainer on a synthetic phantom cohort; the ratio is the cost of the guidance.
  3. peak memory translating a 512x512x300 int16 volume (and a 512x512x150 one, for the slope), each in a
     fresh subprocess: VmHWM from /proc/self/status (reset after set-up via /proc/self/clear_refs), and
     torch.cuda.max_memory_allocated on CUDA; bytes per voxel of the slope against input + output.
Writes results/speed_<device>.md and .json (with the command and the machine). --quick: tiny sizes,
a few seconds, for the test suite (figures not meaningful).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .common import command_line, head_volume, interleaved, machine, make_bundle, median, reference_translate, \
    with_mr_standard, write_results

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = {"forwards": ["--quick", "--device"]}  # see run_all.py
TINY = {"image_size": 32, "generator_width": 8, "generator_blocks": 1, "discriminator_width": 8,
        "predictor_width": 8, "predictor_depth": 2}


def settings(quick: bool, device: torch.device) -> dict:
    cpu = device.type == "cpu"
    if quick:
        return {"volume": (6, 48, 48), "presets": {"small": TINY, "reference": {**TINY, "generator_blocks": 2}},
                "repeats": 3, "reference_repeats": 2, "reference_slices": 6, "train_steps": 2, "train_rounds": 2,
                "cohort": {"n_ct": 2, "n_source": 2, "shape": (6, 32, 32)},
                "train_presets": {"small": TINY}, "train_batch": 2,
                "memory": [(8, 64, 64), (16, 64, 64)], "memory_paths": ["duiit"], "memory_preset": "tiny",
                "threads_variant": cpu, "reference_warmup": 1}
    return {"volume": (200, 256, 256), "presets": {"small": {}, "reference": {}},
            "repeats": 5, "reference_repeats": 3 if cpu else 5,
            # the reference generator on 2 CPU cores takes ~1 s per slice per variant: time a slab of the
            # volume (same per-slice work) and scale to the 200 slices
            "reference_slices": 16 if cpu else 200,
            "train_steps": 5, "train_rounds": 6 if cpu else 10,
            "cohort": {"n_ct": 4, "n_source": 4, "shape": (12, 64, 64)},
            "train_presets": {"small": {}} if cpu else {"small": {}, "reference": {}}, "train_batch": 4,
            "memory": [(150, 512, 512), (300, 512, 512)], "memory_paths": ["duiit", "plain"],
            "memory_preset": "small" if cpu else "reference", "threads_variant": cpu,
            "reference_warmup": 0 if cpu else 1}


# -- 1. translation -------------------------------------------------------------------------------------

def translation(device, config, folder) -> list:
    from duiit.translate import translate_volume
    rows = []
    depth, height, width = config["volume"]
    for preset, overrides in config["presets"].items():
        bundle = make_bundle(Path(folder) / f"{preset}.duiit", "small" if preset == "small" else "reference",
                             **overrides)
        slices = depth if preset == "small" else min(depth, config["reference_slices"])
        repeats = config["repeats"] if preset == "small" else config["reference_repeats"]
        image = head_volume((slices, height, width))
        variants = {
            "duiit": lambda: _sync(device, translate_volume(_cold(bundle), image, device=device)),
            "plain": lambda: _sync(device, reference_translate(bundle, image, device=device)),
        }
        if preset == "small" and config["threads_variant"] and torch.get_num_threads() > 1:
            # on a busy machine the thread count matters more than anything else: both paths at 1 thread too
            variants["duiit, 1 thread"] = lambda: _with_threads(1, lambda: translate_volume(_cold(bundle), image,
                                                                                            device=device))
            variants["plain, 1 thread"] = lambda: _with_threads(1, lambda: reference_translate(bundle, image))
        if preset == "small":  # what the MR histogram standard of an MR-trained bundle costs
            standardising = with_mr_standard(bundle, image)
            variants["duiit, MR standard"] = lambda: _sync(device, translate_volume(_cold(standardising), image,
                                                                                    device=device))
        times = interleaved(variants, repeats, warmup=1 if preset == "small" else config["reference_warmup"])
        for name, values in times.items():
            against = ("plain, 1 thread" if name.endswith("1 thread") else
                       "duiit" if name == "duiit, MR standard" else "plain")
            base = median(times[against])
            seconds = median(values)
            rows.append({"preset": preset, "variant": name, "slices_timed": slices, "volume_slices": depth,
                         "shape": [depth, height, width], "repeats": repeats, "median_s": seconds,
                         "all_s": values, "slices_per_s": slices / seconds,
                         "s_per_volume": seconds * depth / slices, "speedup_vs_plain": base / seconds,
                         "against": against, "paired_speedup": paired_ratio(times[against], values)})
    return rows


def paired_ratio(base: list, values: list) -> float:
    """Median over rounds of base / value: the variants ran side by side in each round, so this cancels the
    machine's drift between rounds (a shared machine's load comes and goes)."""
    return median([b / v for b, v in zip(base, values)])


def _cold(bundle):
    """Forget the networks translate_volume prepared for this bundle: each timed run builds them again."""
    bundle.__dict__.pop("_inference_cache", None)
    return bundle


def _sync(device, result):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


# -- 2. training ----------------------------------------------------------------------------------------

def training(device, config, folder) -> list:
    from duiit.cohort import build_cohort
    from duiit.manifest import read_manifest
    from duiit.networks import PRESETS, NetworkConfig
    from duiit.phantom import write_phantom_cohort
    from duiit.training import Trainer, TrainingOptions
    manifest = write_phantom_cohort(Path(folder) / "cohort", source="MR", **config["cohort"])
    rows = []
    for preset, overrides in config["train_presets"].items():
        network = NetworkConfig(**{**PRESETS[preset].to_dict(), **overrides})
        cohort = build_cohort(read_manifest(manifest), "MR", "CT", "classification", network.image_size, seed=0)
        length = 1000
        trainers = {}
        for method in ("duiit", "cyclegan"):
            options = TrainingOptions(method=method, iterations=length, batch_size=config["train_batch"],
                                      warmup=0.0, ramp=0.0)
            trainer = Trainer(cohort, options, network, device)
            for module in (trainer.translator, trainer.discriminators, trainer.predictor):
                module.train()
            trainers[method] = trainer

        threads = [torch.get_num_threads()]
        if config["threads_variant"] and threads[0] > 1:
            threads.append(1)

        def block(method, n):
            trainer = trainers[method]
            guided = method == "duiit"  # after the warm-up: the task weight is lambda_task, guidance on
            _with_threads(n, lambda: [trainer.joint_step(length, length, with_predictor=guided)
                                      for _ in range(config["train_steps"])])
            _sync(device, None)

        variants = {(m, n): (lambda m=m, n=n: block(m, n)) for n in threads for m in trainers}
        times = interleaved(variants, config["train_rounds"], warmup=1)
        for n in threads:
            per_step = {m: [t / config["train_steps"] for t in times[(m, n)]] for m in trainers}
            base = median(per_step["cyclegan"])
            for method, values in per_step.items():
                seconds = median(values)
                rows.append({"preset": preset, "method": method, "threads": n, "image_size": network.image_size,
                             "batch_size": config["train_batch"], "steps_per_round": config["train_steps"],
                             "rounds": config["train_rounds"], "median_s_per_step": seconds,
                             "iterations_per_s": 1.0 / seconds, "all_s_per_step": values,
                             "ratio_vs_cyclegan": seconds / base})
    return rows


# -- 3. memory (fresh subprocesses) -----------------------------------------------------------------------

def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return -1


def memory_child(args) -> None:
    """One translation in this (fresh) process; prints one JSON line."""
    device = torch.device(args.device)
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    bundle = load_bundle(args.bundle)
    shape = tuple(args.shape)
    image = head_volume(shape)
    # warm-up on a few slices of the same size: lazy initialisation is not what we measure
    warm = head_volume((2, shape[1], shape[2]))
    if args.path == "duiit":
        run = lambda im: translate_volume(bundle, im, device=device)  # noqa: E731
    else:
        run = lambda im: reference_translate(bundle, im, device=device)  # noqa: E731
    run(warm)
    del warm
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
            handle.write("5")
        reset = True
    except OSError:
        reset = False
    started = time.perf_counter()
    result = run(image)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    voxels = int(np.prod(shape))
    out = {"path": args.path, "shape": list(shape), "voxels": voxels, "input_bytes": voxels * 2,
           "output_bytes": voxels * 4, "rss_before": rss_before, "hwm": _status("VmHWM"), "hwm_reset": reset,
           "seconds": seconds, "gpu_peak_allocated": torch.cuda.max_memory_allocated(device)
           if device.type == "cuda" else None}
    del result
    print(json.dumps(out))


def memory(device, config, folder) -> list:
    preset = config["memory_preset"]
    bundle_path = Path(folder) / f"memory_{preset}.duiit"
    if preset == "tiny":
        make_bundle(bundle_path, "small", **TINY)
    else:
        make_bundle(bundle_path, preset)
    rows = []
    for path in config["memory_paths"]:
        for shape in config["memory"]:
            command = [sys.executable, "-m", "Testing.benchmarks.speed", "--memory-child", "--path", path,
                       "--bundle", str(bundle_path), "--device", str(device), "--shape", *map(str, shape)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(),
                                  timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(f"memory child failed: {done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for path in config["memory_paths"]:
        small, big = [r for r in rows if r["path"] == path][:2]
        slope = (big["hwm"] - small["hwm"]) / (big["voxels"] - small["voxels"])
        for row in (small, big):
            row["preset"] = preset
            row["slope_bytes_per_voxel"] = slope
            row["input_plus_output_bytes_per_voxel"] = 6.0
            row["peak_over_input_and_output"] = row["hwm"] - (row["rss_before"] + row["output_bytes"])
            row["constant_bytes"] = row["hwm"] - slope * row["voxels"]
    return rows


# -- report ---------------------------------------------------------------------------------------------------

def markdown(data) -> str:
    m = data["machine"]
    lines = [f"# Speed and memory benchmark ({data['device']})", "",
             f"Command: `{data['command']}`  ", f"Date: {data['date']}  ",
             f"Machine: {m.get('gpu', m['cpu'])}; CPU {m['cpu']}, {m['cpu_count']} cores; torch {m['torch']}, "
             f"{m['torch_threads']} torch threads; numpy {m['numpy']}, SimpleITK {m['SimpleITK']}; "
             f"load average at start {m.get('load_average')}  ", ""]
    if data.get("quick"):
        lines += ["**Quick mode: tiny sizes, figures not meaningful.**", ""]
    if data.get("translation"):
        volume = "x".join(map(str, data["translation"][0]["shape"][::-1]))
        lines += [f"## Translation ({volume} int16 volume; CT in HU + the predictor's outputs)", "",
                  "| preset | variant | slices timed | runs | median s | slices/s | s per volume | speed-up | "
                  "paired speed-up | against |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["translation"]:
            lines.append(f"| {r['preset']} | {r['variant']} | {r['slices_timed']} | {r['repeats']} | "
                         f"{r['median_s']:.3f} | {r['slices_per_s']:.1f} | {r['s_per_volume']:.2f} | "
                         f"{r['speedup_vs_plain']:.2f} | {r.get('paired_speedup', float('nan')):.2f} | "
                         f"{r.get('against', 'plain')} |")
        lines += ["", "plain = one slice at a time, fp32, autograd on, no batching (Testing/benchmarks/common.py). "
                  "Where fewer slices than the volume's were timed, s per volume is scaled from the per-slice time. "
                  "speed-up = the `against` row's median / this row's median; paired speed-up = the median over "
                  "rounds of the two rows' ratio in the same round (robust to the load changing between rounds).",
                  ""]
    if data.get("training"):
        lines += ["## Training (one step; synthetic phantom cohort)", "",
                  "| preset | method | threads | image px | batch | rounds x steps | median s/step | it/s | x cyclegan |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in data["training"]:
            lines.append(f"| {r['preset']} | {r['method']} | {r['threads']} | {r['image_size']} | {r['batch_size']} | "
                         f"{r['rounds']} x {r['steps_per_round']} | {r['median_s_per_step']:.4f} | "
                         f"{r['iterations_per_s']:.2f} | {r['ratio_vs_cyclegan']:.2f} |")
        lines += ["", "duiit step = guided joint step (task weight at lambda_task) incl. the predictor's own step; "
                  "cyclegan step = the translator phase step (G/F + D, no predictor).", ""]
    if data.get("memory"):
        lines += [f"## Peak memory translating an int16 volume ({data['memory'][0]['preset']} networks)", "",
                  "| path | volume | RSS before (input loaded) MB | peak RSS MB | peak - (before + output) MB | "
                  "slope B/voxel | input+output B/voxel | GPU peak MB | s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in data["memory"]:
            gpu = f"{r['gpu_peak_allocated'] / 2**20:.0f}" if r.get("gpu_peak_allocated") is not None else "-"
            lines.append(f"| {r['path']} | {'x'.join(map(str, r['shape'][::-1]))} | {r['rss_before'] / 2**20:.0f} | "
                         f"{r['hwm'] / 2**20:.0f} | {r['peak_over_input_and_output'] / 2**20:.0f} | "
                         f"{r['slope_bytes_per_voxel']:.2f} | {r['input_plus_output_bytes_per_voxel']:.0f} | {gpu} | "
                         f"{r['seconds']:.1f} |")
        lines += ["", "Each row is a fresh process; the peak high-water mark is reset after set-up (input made, "
                  "networks loaded, one warm-up), so `peak - (before + output)` is what translation adds beyond "
                  "its own output image; the slope between the two volume sizes is in bytes per voxel.", ""]
    if data.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in data["notes"]] + [""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m Testing.benchmarks.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (figures not meaningful)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--only", nargs="+", choices=("translation", "training", "memory"),
                        help="run only these parts")
    parser.add_argument("--presets", nargs="+", choices=("small", "reference"),
                        help="translation at these presets only (default both)")
    parser.add_argument("--output", help="results stem (default speed_<device> or speed_quick_<device>)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before anything runs")
    parser.add_argument("--results-dir", help="where to write the .md and .json (default Testing/benchmarks/results)")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="duiit", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.quick and not args.memory_child:
        torch.set_num_threads(1)  # seconds, not minutes, on a busy shared machine (figures are not the point)
    if args.memory_child:
        memory_child(args)
        return {}
    from duiit.device import resolve_device
    device, message = resolve_device(args.device)
    config = settings(args.quick, device)
    if args.presets:
        config["presets"] = {k: v for k, v in config["presets"].items() if k in args.presets}
    parts = args.only or ["translation", "training", "memory"]
    data = {"command": command_line() if argv is None else "python -m Testing.benchmarks.speed " + " ".join(argv),
            "device": str(device), "device_message": message, "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(device), "settings": config, "notes": []}
    with tempfile.TemporaryDirectory() as folder:
        for part in parts:
            started = time.perf_counter()
            data[part] = globals()[part](device, config, folder)
            print(f"[speed] {part}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    data["machine"]["load_average_end"] = list(os.getloadavg())
    data["summary"] = summary(data)
    data["notes"] += data["summary"]["lines"]
    stem = args.output or (f"speed_quick_{device.type}" if args.quick else f"speed_{device.type}")
    md = markdown(data)
    paths = write_results(stem, md, data, args.results_dir)
    print(md)
    print(f"written: {paths[0]} and {paths[1]}", file=sys.stderr)
    return data


def summary(data) -> dict:
    out, lines = {}, []
    for r in data.get("translation") or []:
        if r["variant"] == "duiit":
            out[f"translation_speedup_{r['preset']}"] = r["speedup_vs_plain"]
            lines.append(f"translation, {r['preset']} preset: {r['speedup_vs_plain']:.2f}x the plain reference "
                         f"({r['slices_per_s']:.1f} slices/s, {r['s_per_volume']:.2f} s per "
                         f"{r['volume_slices']}-slice volume)")
        if r["variant"] == "duiit, MR standard":
            out[f"mr_standard_time_ratio_{r['preset']}"] = 1.0 / r["paired_speedup"]
            lines.append(f"translation, {r['preset']} preset, with the MR histogram standard: "
                         f"{1.0 / r['paired_speedup']:.3f}x the time without it (paired median over rounds)")
    default_threads = data["machine"]["torch_threads"]
    for r in data.get("training") or []:
        if r["method"] == "duiit":
            suffix = "" if r["threads"] == default_threads else f"_{r['threads']}thread"
            out[f"duiit_step_vs_cyclegan_{r['preset']}{suffix}"] = r["ratio_vs_cyclegan"]
            lines.append(f"training, {r['preset']} preset, {r['threads']} thread(s): a duiit step costs "
                         f"{r['ratio_vs_cyclegan']:.2f}x a cyclegan step ({r['iterations_per_s']:.2f} it/s)")
    for r in data.get("memory") or []:
        if r["path"] == "duiit" and r is [m for m in data["memory"] if m["path"] == "duiit"][-1]:
            out["memory_slope_bytes_per_voxel"] = r["slope_bytes_per_voxel"]
            lines.append(f"memory: peak grows {r['slope_bytes_per_voxel']:.2f} B/voxel (input int16 + output "
                         f"float32 = 6); {r['peak_over_input_and_output'] / 2**20:.0f} MB above input + output at "
                         f"{'x'.join(map(str, r['shape'][::-1]))}")
    out["lines"] = lines
    return out


if __name__ == "__main__":
    main()
