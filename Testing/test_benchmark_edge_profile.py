"""Testing/benchmarks/edge_profile.py: rings counted from the head's outer edge, and a skull drawn one ring too
far out shows as such."""

import numpy as np

from Testing.benchmarks.edge_profile import depth_from_edge, edge_profile


def test_depth_counts_rings_from_the_edge_and_pools_the_inside():
    head = np.zeros((1, 9, 9), bool)
    head[0, 1:8, 1:8] = True                                   # a 7 x 7 square: rings at 1, 2, 3 and its centre
    depth = depth_from_edge(head, max_depth=3)
    assert depth[0, 0, 0] == 0 and depth[0, 1, 1] == 1 and depth[0, 1, 4] == 1
    assert depth[0, 2, 2] == 2 and depth[0, 3, 4] == 3 and depth[0, 4, 4] == 3   # 3 pools depths 3 and 4
    assert (depth[head] > 0).all() and (depth[~head] == 0).all()


def test_a_skull_one_ring_too_far_out_shows_in_the_profile():
    y, x = np.mgrid[:40, :40] - 19.5
    radius = np.hypot(y, x)[None]
    head = radius < 15
    depth = depth_from_edge(head, 6)
    real = np.where(head, 30.0, -1000.0)
    real[depth == 3] = 900.0                                    # the skull: the third ring
    translated = np.where(head, 30.0, -1000.0)
    translated[depth == 2] = 900.0                              # drawn on the second
    rows = {r["depth_px"]: r for r in edge_profile(np.zeros_like(real), translated, real, head, 6)}
    assert rows[2]["translated_mean_hu"] == 900.0 and rows[2]["real_mean_hu"] == 30.0
    assert rows[3]["translated_mean_hu"] == 30.0 and rows[3]["real_mean_hu"] == 900.0
    assert rows[2]["mae_hu"] == rows[3]["mae_hu"] == 870.0 and rows[1]["mae_hu"] == rows[6]["mae_hu"] == 0.0
