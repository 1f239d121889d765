"""CUDA fidelity and speed of the translate path: `python -m Testing.benchmarks.gpu_check [--quick] [--compile]`.

Run by Testing/benchmarks/gpu_check.sh on a machine with an NVIDIA GPU. At the reference generator (9 blocks,
256 px; untrained N(0, 0.02) weights, which keep the output spread over the whole HU range, or --bundle):
  1. fidelity: each CUDA variant (fp32 without and with TF32, bf16 and fp16 autocast for the network body with the
     last convolution in fp32, each with and without channels_last; torch.compile with --compile) against the
     CPU's fp32 translation of a 256x256x48 synthetic head: 99.9th percentile / max / median |HU difference|
     inside the head; a variant passes under 5 HU at the 99.9th percentile (issue 5);
  2. speed: a 512x512x300 int16 volume translated end to end (normalisation, resampling and the predictor
     included), median of 5 warm runs per variant, and the first (cold) call; the target is under 2 s;
  3. a recommendation: the fastest passing variant, and what to set in duiit/translate.py for it.
Writes results/gpu_check.md and .json (or --results-dir).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .common import command_line, head_volume, machine, make_bundle, median, write_results

HEAD_LEVEL = 100      # head_volume: air is 0 +- 25, the head's tissues 120 .. 700
LIMIT_HU = 5.0
TARGET_S = 2.0


def variants(compile_: bool) -> dict:
    from duiit.translate import FastPath
    out = {
        "fp32 (TF32 off)": FastPath(precision="fp32"),
        "fp32 (TF32 on)": FastPath(precision="fp32", tf32=True),
        "bf16": FastPath(precision="bf16", channels_last=False),
        "bf16 + channels_last": FastPath(precision="bf16", channels_last=True),
        "fp16": FastPath(precision="fp16", channels_last=False),
        "fp16 + channels_last": FastPath(precision="fp16", channels_last=True),
    }
    if compile_:
        out["bf16 + compile"] = FastPath(precision="bf16", channels_last=False, compile=True)
        out["fp16 + compile"] = FastPath(precision="fp16", channels_last=False, compile=True)
    return out


def fidelity(bundle, device, options, shape) -> list:
    from duiit.translate import translate_volume
    image = head_volume(shape)
    head = sitk.GetArrayViewFromImage(image) > HEAD_LEVEL
    started = time.perf_counter()
    truth = sitk.GetArrayFromImage(translate_volume(bundle, image, device="cpu").ct)
    cpu_s = time.perf_counter() - started
    rows = []
    for name, fast in options.items():
        try:
            result = translate_volume(bundle, image, device=device, fast=fast)
        except Exception as exc:  # a variant that does not run is reported, not fatal
            rows.append({"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            continue
        diff = np.abs(sitk.GetArrayFromImage(result.ct) - truth)
        inside = diff[head]
        rows.append({"variant": name, "p999_head": float(np.percentile(inside, 99.9)),
                     "max_head": float(inside.max()), "median_head": float(np.median(inside)),
                     "p999_all": float(np.percentile(diff, 99.9)), "max_all": float(diff.max()),
                     "passes": bool(np.percentile(inside, 99.9) < LIMIT_HU),
                     "same_geometry": result.ct.GetSize() == image.GetSize()
                     and result.ct.GetDirection() == image.GetDirection()
                     and result.ct.GetOrigin() == image.GetOrigin() and result.ct.GetSpacing() == image.GetSpacing()})
    for row in rows:
        row["cpu_reference_s"] = cpu_s
        row["shape"] = list(shape)
    return rows


def speed(bundle_path, device, options, shape, repeats) -> list:
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    image = head_volume(shape)
    rows = []
    for name, fast in options.items():
        bundle = load_bundle(bundle_path)  # a fresh object: nothing prepared yet
        try:
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            translate_volume(bundle, image, device=device, fast=fast)
            torch.cuda.synchronize(device)
            cold = time.perf_counter() - started
            times = []
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(repeats):
                started = time.perf_counter()
                translate_volume(bundle, image, device=device, fast=fast)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - started)
        except Exception as exc:
            rows.append({"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            continue
        rows.append({"variant": name, "shape": list(shape), "cold_s": cold, "median_s": median(times),
                     "all_s": times, "slices_per_s": shape[0] / median(times),
                     "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20,
                     "meets_target": median(times) < TARGET_S})
    return rows


def batch_sizes(bundle_path, device, fast, shape, repeats) -> list:
    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    image = head_volume(shape)
    bundle = load_bundle(bundle_path)
    rows = []
    for size in (8, 16, 32, 64):
        translate_volume(bundle, image, device=device, fast=fast, batch_size=size)
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            translate_volume(bundle, image, device=device, fast=fast, batch_size=size)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        rows.append({"batch_size": size, "median_s": median(times), "all_s": times})
    return rows


def recommend(fidelity_rows, speed_rows) -> dict:
    passing = {r["variant"] for r in fidelity_rows if r.get("passes")}
    timed = [r for r in speed_rows if "median_s" in r and r["variant"] in passing]
    if not timed:
        return {"variant": None, "advice": "no variant passed; keep CUDA_AUTO_PRECISION = 'fp32'"}
    best = min(timed, key=lambda r: r["median_s"])
    name = best["variant"]
    precision = "bf16" if "bf16" in name else "fp16" if "fp16" in name else "fp32"
    advice = (f"fastest passing variant: {name} ({best['median_s']:.3f} s per {'x'.join(map(str, best['shape'][::-1]))} volume); in "
              f"duiit/translate.py set CUDA_AUTO_PRECISION = {precision!r}; TF32 "
              f"{'on' if 'TF32 on' in name else 'off'}; channels_last default "
              f"{'on' if 'channels_last' in name else 'off'}; compile {'on' if 'compile' in name else 'off'}")
    return {"variant": name, "precision": precision, "median_s": best["median_s"], "advice": advice}


def markdown(data) -> str:
    m = data["machine"]
    lines = [f"# CUDA translate path: fidelity and speed ({m.get('gpu')})", "",
             f"Command: `{data['command']}`  ", f"Date: {data['date']}  ",
             f"Machine: {m.get('gpu')}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}; CPU {m['cpu']}, "
             f"{m['cpu_count']} cores; torch {m['torch']}  ", f"Networks: {data['networks']}", "",
             f"## Fidelity against the CPU's fp32 ({'x'.join(map(str, data['fidelity'][0]['shape'][::-1]))} "
             f"head; limit {LIMIT_HU} HU at the 99.9th percentile inside the head)", "",
             "| variant | p99.9 head HU | max head HU | median head HU | p99.9 all HU | passes | geometry exact |",
             "|---|---|---|---|---|---|---|"]
    for r in data["fidelity"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error']} | | | | no | |")
            continue
        lines.append(f"| {r['variant']} | {r['p999_head']:.3f} | {r['max_head']:.2f} | {r['median_head']:.4f} | "
                     f"{r['p999_all']:.3f} | {'yes' if r['passes'] else 'NO'} | {r['same_geometry']} |")
    lines += ["", f"## Speed: {'x'.join(map(str, data['speed'][0]['shape'][::-1]))} int16 volume end to end "
              f"(target < {TARGET_S} s)", "",
              "| variant | median s (warm) | slices/s | first call s (cold) | GPU peak MB | < 2 s |", "|---|---|---|---|---|---|"]
    for r in data["speed"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['median_s']:.3f} | {r['slices_per_s']:.0f} | {r['cold_s']:.2f} | "
                     f"{r['gpu_peak_mb']:.0f} | {'yes' if r['meets_target'] else 'no'} |")
    if data.get("batch_sizes"):
        lines += ["", f"Batch size ({data['batch_variant']}): " + ", ".join(
            f"{r['batch_size']}: {r['median_s']:.3f} s" for r in data["batch_sizes"])]
    lines += ["", "## Recommendation", "", data["recommendation"]["advice"], ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m Testing.benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (checks that it runs)")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variants (a minute each)")
    parser.add_argument("--bundle", help="a trained bundle at the reference preset instead of untrained networks")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-dir")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available", file=sys.stderr)
        return {}
    device = torch.device("cuda", 0)
    with tempfile.TemporaryDirectory() as folder:
        if args.bundle:
            bundle_path, networks = Path(args.bundle), f"bundle {args.bundle}"
        else:
            bundle_path = Path(folder) / "reference.duiit"
            overrides = {"generator_blocks": 2, "image_size": 64} if args.quick else {}
            make_bundle(bundle_path, "reference", **overrides)
            networks = ("reference preset (9 blocks, 256 px), untrained N(0, 0.02) weights, seed 0"
                        if not args.quick else "quick: reference widths, 2 blocks, 64 px")
        from duiit.bundle import load_bundle
        options = variants(args.compile)
        fid_shape = (8, 64, 64) if args.quick else (48, 256, 256)
        speed_shape = (20, 128, 128) if args.quick else (300, 512, 512)
        data = {"command": command_line() if argv is None else "python -m Testing.benchmarks.gpu_check " + " ".join(argv),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(device), "networks": networks}
        for part, run in (("fidelity", lambda: fidelity(load_bundle(bundle_path), device, options, fid_shape)),
                          ("speed", lambda: speed(bundle_path, device, options, speed_shape, args.repeats))):
            started = time.perf_counter()
            data[part] = run()
            print(f"[gpu_check] {part}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        data["recommendation"] = recommend(data["fidelity"], data["speed"])
        chosen = data["recommendation"].get("variant") or "fp32 (TF32 off)"
        data["batch_variant"] = chosen
        data["batch_sizes"] = batch_sizes(bundle_path, device, options[chosen], speed_shape,
                                          max(2, args.repeats - 2))
    md = markdown(data)
    paths = write_results("gpu_check" + ("_quick" if args.quick else ""), md, data, args.results_dir)
    print(md)
    print(f"written: {paths[0]} and {paths[1]}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
