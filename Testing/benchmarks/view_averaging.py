"""Paired fidelity of saved bundles by the number of views their translation averages (duiit translate --views).

    python -m Testing.benchmarks.view_averaging COHORT_DIR BUNDLE [BUNDLE ...] [--views 1,2,4,8] [--json OUT]

On the paired check set of a real-image benchmark cohort (check_manifest.csv: MR SIMULATED from held-out real
CT), each bundle translates each check MR averaged over 1, 2, 4 and 8 views (duiit/view_averaging.py), and
the MAE (HU, inside the head), PSNR (4000 HU range) and SSIM against the real CT are printed, as the benchmark's
final paired check computes them. For bundles trained before the benchmark made that check with views too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def by_views(bundle_path: Path, cohort: Path, views: list) -> dict:
    """{views: the paired check's mean MAE / PSNR / SSIM}."""
    from duiit.bundle import load_bundle
    from Testing.benchmarks.real_images import paired_check
    manifest = cohort / "check_manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"view_averaging: {cohort} has no check_manifest.csv (not a benchmark cohort folder)")
    bundle = load_bundle(bundle_path)
    return {n: {k: paired_check(bundle, manifest, "cpu", n)["mean"][k] for k in ("mae_hu", "psnr_db", "ssim")}
            for n in views}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.view_averaging", description=__doc__.split("\n")[0])
    p.add_argument("cohort", type=Path, help="the benchmark cohort folder (with check_manifest.csv)")
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--views", default="1,2,4,8", help="comma-separated view counts (each one of 1, 2, 4, 8)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    from duiit.view_averaging import VIEW_COUNTS
    views = [int(v) for v in args.views.split(",") if v.strip().isdigit()]
    if not views or any(n not in VIEW_COUNTS for n in views):
        p.error(f"--views {args.views}: give view counts from {', '.join(map(str, VIEW_COUNTS))}, comma-separated")
    print("bundle | views | paired MAE HU | PSNR dB | SSIM")
    results = {}
    for path in args.bundles:
        results[str(path)] = rows = by_views(path, args.cohort, views)
        for n, row in rows.items():
            print(f"{path} | {n} | {row['mae_hu']:.1f} | {row['psnr_db']:.2f} | {row['ssim']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cohort": str(args.cohort), "bundles": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
