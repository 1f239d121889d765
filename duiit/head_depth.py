"""How deep each pixel lies inside the head, measured from the head's outer edge: an input channel for the
discriminators.

Why: on the real-image benchmark the unpaired translator drew the skull on the T1's bright scalp ring, one
ring too far out, and a discriminator that sees 34 px patches of CT alone accepts it
(Testing/benchmarks/edge_profile.py). Told how deep each pixel lies, it can tell a skull on the wrong ring
from a real one (runs 107-129 of Testing/benchmarks/results/real_images.md: lower paired MAE on every seed,
simulated and real T1s, but a lower AUC for DUIIT's joint predictor: runs 132-139 show it takes away what the
guidance adds, so it is off unless asked for); the generators gained nothing from the same channel. The map
is computed from the image itself (no parameters, no gradient), so every network still takes one image. With
depth_from_input (duiit train --depth-from-input) a translation is judged by the map of the image it came from
instead: a translator that draws the scalp as air shrinks its own outline, but not the MR's (runs 243-246:
lower paired MAE at 2 mm).
"""

import torch
import torch.nn.functional as F

# Network units: CT -1..-0.6 is -1024..-150 HU, so -0.7 is about -370 HU; MR's background is -1 and its
# foreground median 0, so -0.7 is 15 % of the way to the median. Both leave air out and tissue in.
HEAD_THRESHOLD_UNIT = -0.7


def outside_head(images: torch.Tensor, threshold: float = HEAD_THRESHOLD_UNIT) -> torch.Tensor:
    """The dark pixels connected to the image border: the air around the head. A dark ring inside the head
    (the skull on T1, CSF) is not reached from outside while the scalp around it is closed."""
    dark = images <= threshold
    outside = torch.zeros_like(dark)  # starts as the dark pixels on the image border
    outside[..., [0, -1], :] = dark[..., [0, -1], :]
    outside[..., :, [0, -1]] = dark[..., :, [0, -1]]
    while True:  # flood fill: grows by one pixel a pass until it stops
        grown = (F.max_pool2d(outside.float(), 3, stride=1, padding=1) > 0) & dark
        if torch.equal(grown, outside):
            return outside
        outside = grown


def head_depth(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, 1, H, W) images in network units -> depth from the head's outer edge in [0, 1]: 0 outside the head,
    k / pixels on the k-th ring of head pixels (chessboard distance), 1 from `pixels` rings inward."""
    with torch.no_grad():
        inside = (~outside_head(images)).to(images.dtype)
        depth = torch.zeros_like(inside)
        for _ in range(pixels):
            depth += inside
            inside = -F.max_pool2d(-inside, 3, stride=1, padding=1)  # erosion by one ring
        return depth / pixels
