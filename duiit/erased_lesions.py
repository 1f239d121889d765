"""Source lesion slices with the lesion erased: the counterfactual DUIIT's guide is shown as background.

Guided on lesion slices only, G learnt to make every slice at a lesion's level look like a lesion to the guide,
the lesion-free twins as much as the lesion slices (benchmark analysis 29: the guide's lesion log-odds on
G(MR) rose from -0.7 to +1.7 within 200 guided steps, +1.69 on the twins, and hardly moved with the translated
lesion's contrast, which fell from +44 to +13 HU). Shown the same slice translated without its lesion as
background, the guide can be satisfied only by what G draws because of the lesion.
"""

import torch
import torch.nn.functional as F

from .slices import FOREGROUND_LEVEL

# The ring whose median fills an erased lesion: 1-3 px from it, inside the head (as lesion_inversion.ring).
RING_INNER, RING_OUTER = 1, 3


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def head_ring(images: torch.Tensor, lesions: torch.Tensor) -> torch.Tensor:
    """The head voxels 1-3 px around each (N, 1, S, S) slice's lesion."""
    return _dilate(lesions, RING_OUTER) & ~_dilate(lesions, RING_INNER) & (images > FOREGROUND_LEVEL)


def erase_lesions(images: torch.Tensor, lesions: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) network-unit slices with each slice's lesion voxels set to the median of the head voxels
    1-3 px around them (of the lesion's own voxels where there are none); slices without lesion unchanged."""
    ring = head_ring(images, lesions)
    erased = images.clone()
    for n in torch.nonzero(lesions.flatten(1).any(dim=1)).flatten().tolist():
        around = images[n][ring[n]] if ring[n].any() else images[n][lesions[n]]
        erased[n][lesions[n]] = around.median()
    return erased
