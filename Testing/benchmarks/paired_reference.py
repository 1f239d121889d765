"""The translator network told the answer: how low can the paired MAE of the real-image benchmark go?

    python -m Testing.benchmarks.paired_reference [--quick] [--steps 1000] [--width 16] [--blocks 3] [--out DIR]

The real-image benchmark's paired check (Testing/benchmarks/real_images.py) compares translated SIMULATED T1s
with the real CT they were simulated from. Its translators learn unpaired. This trains the same generator
(ResnetGenerator, the small preset unless --width/--blocks say otherwise) PAIRED instead: L1 between G(T1)
and the CT, on T1s simulated from other augmentations of the one real CT (3, as the benchmark's labelled CT
patients), and reports the MAE on the benchmark's check set of cohort seed 0 (the same volumes: same random
streams). The gap between this and an unpaired translator is what unpaired learning loses; this itself is
what the network, grid (64 px, 4 mm; --grid small: 128 px, 2 mm) and steps allow. Same metric
(duiit.fidelity.paired_fidelity, inside the head mask), Adam 2e-4 / beta1 0.5 and batch 4 as the benchmark.

Writes OUT/paired_reference.json (every run kept, newest last) and OUT/paired_reference.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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

RUN_ALL = {"forwards": ["--quick"]}
NAME = "paired_reference"
DEFAULT_OUT = ROOT / "Testing" / "benchmarks" / "results"
VIEWS = 8  # the final check is also made with the translation averaged over this many views
TRAIN_ROLE = 7  # random streams of the training pairs, apart from head_cohort.case_rng's roles (1, 2, 3)


def simulated_pairs(ct_volume, streams: list, grid: str = "tiny") -> list:
    """[(MR network units, CT network units, CT HU, head mask)], one augmentation per random stream, as
    build_cohort makes them."""
    from duiit import head_cohort
    from duiit.normalisation import normalise
    pairs = []
    for rng in streams:
        case = head_cohort.simulated_mr_case(ct_volume, grid, rng, 0)
        hu = case["image"].astype(np.float32)
        pairs.append((normalise(case["mr"], "MR")[0], normalise(hu, "CT")[0], hu, case["head"] > 0))
    return pairs


def check_mae(generator, pairs: list, views: int = 1, downsamplings: int = 2) -> float:
    """Mean paired MAE over the check pairs, the translation averaged over `views` views (duiit translate --views)."""
    import torch
    from duiit.fidelity import paired_fidelity
    from duiit.normalisation import unit_to_hu
    from duiit.view_averaging import ViewAveraging
    translate = ViewAveraging(generator, views, downsamplings) if views > 1 else generator
    generator.eval()
    with torch.no_grad():
        maes = [paired_fidelity(unit_to_hu(translate(torch.from_numpy(mr)[:, None])[:, 0].numpy()), hu,
                                head)["mae_hu"] for mr, _, hu, head in pairs]
    generator.train()
    return float(np.mean(maes))


def run(args) -> dict:
    import torch
    from Testing.benchmarks.common import machine
    from duiit import head_cohort, sample_data
    from duiit.fidelity import paired_fidelity
    from duiit.networks import PRESETS, ResnetGenerator, init_weights
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started, started_at = time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S")
    ct_volume = head_cohort.load_real_volumes({"cranium_ct": sample_data.fetch("cranium_ct", args.cache)},
                                              [head_cohort.SIMULATED_T1])[0]
    train = simulated_pairs(ct_volume, [np.random.default_rng([0, TRAIN_ROLE, i]) for i in range(args.train_volumes)],
                            args.grid)
    check = simulated_pairs(ct_volume, [head_cohort.case_rng(0, "CHECK", i) for i in range(args.check_volumes)],
                            args.grid)
    # the network's input is the grid's in-plane size (tiny: 64 px at 4 mm, the small preset's): no resampling
    mr = torch.from_numpy(np.concatenate([p[0] for p in train]))[:, None]
    ct = torch.from_numpy(np.concatenate([p[1] for p in train]))[:, None]
    config = dataclasses.replace(PRESETS["small"], generator_width=args.width, generator_blocks=args.blocks,
                                 image_size=head_cohort.PRESETS[args.grid][0])
    generator = ResnetGenerator(config)
    init_weights(generator, torch.Generator().manual_seed(args.seed))
    optimiser = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    draw = torch.Generator().manual_seed(args.seed)
    curve = []
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(mr), (4,), generator=draw)
        loss = (generator(mr[batch]) - ct[batch]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0 or step == args.steps:
            curve.append({"step": step, "l1_unit": round(loss.item(), 5),
                          "check_mae_hu": round(check_mae(generator, check), 1)})
            print(f"step {step}: L1 {loss.item():.4f}  check MAE {curve[-1]['check_mae_hu']:.1f} HU", file=sys.stderr)
    constant = np.mean([paired_fidelity(np.where(head, 20.0, -1000.0).astype(np.float32), hu, head)["mae_hu"]
                        for _, _, hu, head in check])
    return {"started": started_at, "command": "python -m Testing.benchmarks.paired_reference "
            + shlex.join(sys.argv[1:]), "machine": machine(), "wall_seconds": round(time.monotonic() - started, 1),
            "settings": {"grid": args.grid, "steps": args.steps, "generator_width": args.width,
                         "generator_blocks": args.blocks,
                         "train_volumes": args.train_volumes, "train_slices": len(mr), "check_volumes": len(check),
                         "seed": args.seed, "quick": args.quick},
            "curve": curve, "final_check_mae_hu": curve[-1]["check_mae_hu"],
            f"final_check_mae_{VIEWS}_views_hu": round(check_mae(generator, check, VIEWS,
                                                                config.generator_downsamplings), 1),
            "reference_constant_20hu_in_head_mae_hu": round(float(constant), 1)}


def render(runs: list) -> str:
    out = ["# The translator told the answer: paired training on the real-image check (issue 4)", "",
           "Generated by `Testing/benchmarks/paired_reference.py` (every run kept; newest last). The generator of the "
           "real-image benchmark trained PAIRED (L1) on T1s SIMULATED from augmentations of the one real CT, scored "
           "on the benchmark's check set (cohort seed 0): the MAE the network and grid allow when the answer is "
           "given, against which the unpaired translators (results/real_images.md) are measured.", "",
           "| run | started | grid | generator width / blocks | steps | training volumes (slices) | "
           f"check MAE HU by step | final check MAE HU | averaged over {VIEWS} views | 20 HU constant | wall s | "
           "command |", "|---" * 12 + "|"]
    for n, r in enumerate(runs, 1):
        s = r["settings"]
        out.append(f"| {n} | {r['started']} | {s.get('grid', 'tiny')} | {s['generator_width']} / "
                   f"{s['generator_blocks']} | {s['steps']} | "
                   f"{s['train_volumes']} ({s['train_slices']}) | "
                   + ", ".join(f"{c['step']}: {c['check_mae_hu']:.0f}" for c in r["curve"])
                   + f" | **{r['final_check_mae_hu']:.1f}** | "
                   + (f"{r[key]:.1f}" if (key := f"final_check_mae_{VIEWS}_views_hu") in r else "–")
                   + f" | {r['reference_constant_20hu_in_head_mae_hu']:.1f} | "
                   f"{r['wall_seconds']:.0f} | `{r['command']}` |")
    m = runs[-1]["machine"]
    out += ["", f"Machine of the last run: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}, "
                f"{m['torch_threads']} thread(s), Python {m['python']}.", ""]
    return "\n".join(out)


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs.append(result)
    for target, text in ((path, json.dumps({"runs": runs}, indent=1) + "\n"), (out / f"{NAME}.md", render(runs))):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.paired_reference",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 steps, 1 check volume, results in a temp folder (for tests)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=250, help="check MAE every N steps")
    p.add_argument("--width", type=int, default=16, help="generator width (the small preset's: 16)")
    p.add_argument("--blocks", type=int, default=3, help="generator residual blocks (the small preset's: 3)")
    p.add_argument("--grid", choices=("tiny", "small"), default="tiny",
                   help="the cohort grid: tiny (64 px at 4 mm, 8 mm slices; the benchmark's) or small (128 px at 2 mm)")
    p.add_argument("--train-volumes", type=int, default=3)
    p.add_argument("--check-volumes", type=int, default=3, help="the benchmark's check set has 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", help="sample image cache folder (default $DUIIT_CACHE or ~/.cache/duiit)")
    p.add_argument("--out", help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)}; quick: a temp folder)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.every, args.check_volumes = 3, 3, 1
    return args


def main(argv=None) -> int:
    from duiit.errors import DuiitError
    args = parse_args(argv)
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="duiit_paired_")) if args.quick else DEFAULT_OUT)
    try:
        result = run(args)
    except DuiitError as exc:
        print(f"paired_reference: the real sample image cannot be used here: {exc}", file=sys.stderr)
        return 3
    write(out, result)
    print(f"check MAE {result['final_check_mae_hu']:.1f} HU after {args.steps} paired steps "
          f"(20 HU constant: {result['reference_constant_20hu_in_head_mae_hu']:.1f} HU); results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
