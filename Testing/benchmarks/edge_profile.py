"""Where a translator puts the skull: HU by depth from the head's outer edge, translated against real CT.

    python -m Testing.benchmarks.edge_profile BUNDLE COHORT_DIR [--depth 8] [--views 1] [--json OUT.json]

On the paired check set of a real-image benchmark cohort (check_manifest.csv: MR SIMULATED from held-out real
CT), each check MR is translated with the bundle; for each in-plane depth from the head's outer edge (1 = the
outermost ring of head voxels in its slice, 2 = the ring inside it, ...) it prints the mean MR intensity, the
mean translated and real HU, and the MAE there. On T1 the scalp's fat is the bright outer ring and the skull
a dark ring inside it; a translator that turns the bright ring into bone puts the skull one ring too far out,
which the per-tissue MAE shows only as a large error in bone and in the soft tissue next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from duiit.view_averaging import VIEW_COUNTS  # noqa: E402  (after the path set-up; no torch import)


def depth_from_edge(head: np.ndarray, max_depth: int) -> np.ndarray:
    """Per axial slice, how many 4-neighbour erosions each head voxel survives (1 = on the edge), capped at
    max_depth; 0 outside the head."""
    depth = np.zeros(head.shape, np.int32)
    inside = head.astype(bool)
    for d in range(1, max_depth + 1):
        depth[inside] = d
        padded = np.pad(inside, ((0, 0), (1, 1), (1, 1)))
        inside = (inside & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2]
                  & padded[:, 1:-1, 2:])
    return depth


def edge_profile(mr: np.ndarray, translated_hu: np.ndarray, real_hu: np.ndarray, head: np.ndarray,
                 max_depth: int) -> list:
    """One row per depth (the deepest row pools everything at max_depth or deeper)."""
    depth = depth_from_edge(head, max_depth)
    rows = []
    for d in range(1, max_depth + 1):
        ring = depth == d
        if ring.any():
            rows.append({"depth_px": d, "voxels": int(ring.sum()), "mr_mean": float(mr[ring].mean()),
                         "translated_mean_hu": float(translated_hu[ring].mean()),
                         "real_mean_hu": float(real_hu[ring].mean()),
                         "mae_hu": float(np.abs(translated_hu[ring] - real_hu[ring]).mean())})
    return rows


def check_set_profile(bundle_path: Path, cohort: Path, max_depth: int, views: int = 1) -> list:
    """edge_profile over the cohort's check volumes, voxel-weighted."""
    from duiit.bundle import load_bundle
    from Testing.benchmarks.real_images import translated_check_set
    if not (cohort / "check_manifest.csv").is_file():
        raise SystemExit(f"edge_profile: {cohort} has no check_manifest.csv (not a benchmark cohort folder)")
    check_set = translated_check_set(load_bundle(bundle_path), cohort, views=views)
    rows_by_volume = [edge_profile(mr, translated, real, head, max_depth) for mr, translated, real, head in check_set]
    pooled = []
    for rows in zip(*rows_by_volume):
        voxels = sum(r["voxels"] for r in rows)
        pooled.append({"depth_px": rows[0]["depth_px"], "voxels": voxels,
                       **{k: sum(r[k] * r["voxels"] for r in rows) / voxels
                          for k in ("mr_mean", "translated_mean_hu", "real_mean_hu", "mae_hu")}})
    return pooled


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m Testing.benchmarks.edge_profile", description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("cohort", type=Path, help="the benchmark cohort folder (with check_manifest.csv)")
    p.add_argument("--depth", type=int, default=8, help="deepest ring reported, in pixels")
    p.add_argument("--views", type=int, default=1, choices=VIEW_COUNTS,
                   help="translate averaged over this many views (duiit translate --views)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    rows = check_set_profile(args.bundle, args.cohort, args.depth, args.views)
    print("depth px  voxels   MR mean  translated HU  real HU  MAE HU")
    for r in rows:
        print(f"{r['depth_px']:8d} {r['voxels']:7d} {r['mr_mean']:9.1f} {r['translated_mean_hu']:14.0f} "
              f"{r['real_mean_hu']:8.0f} {r['mae_hu']:7.0f}")
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "cohort": str(args.cohort), "rows": rows},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
