"""Random mirroring and shifting of the predictor's training slices, so that a predictor that sees few patients
learns what a finding looks like rather than where each training patient's findings lie."""

import torch
import torch.nn.functional as F

SHIFT_DIVISOR = 16  # shifts reach up to 1/16 of the image each way (4 px at the small preset's 64 px)


def augment_predictor_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What --predictor-augment does to each batch a predictor learns from."""
    return mirror_and_shift(images, max(1, images.shape[-1] // SHIFT_DIVISOR), generator)


def mirror_and_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image (N, C, H, W) mirrored left-right with probability 1/2 and shifted by up to max_shift pixels
    along each axis; the edge pixels (air, for a head) fill what the shift uncovers."""
    n = images.shape[0]
    mirrored = torch.rand(n, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    images = torch.where(mirrored.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    height, width = images.shape[-2:]
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])
