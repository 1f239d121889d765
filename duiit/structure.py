"""Structure consistency across modalities: MIND, the modality independent neighbourhood descriptor.

An unpaired translator is free to move or invent structure as long as the discriminator is fooled; the
structure-constrained CycleGAN for brain MR -> CT (Yang et al., DLMIA 2018) adds an L1 loss between the MIND
descriptors of the input and its translation, so edges stay where the input has them whatever their
contrast. MIND (Heinrich et al., Medical Image Analysis 2012) describes each pixel by how similar the patch
around it is to the patches around its neighbours, relative to the local variance, so it does not depend on
the intensity mapping of the modality.
"""

import torch
import torch.nn.functional as F

# The 4-neighbourhood at `distance` pixels (the 2D form of MIND's 6-neighbourhood search region).
OFFSETS = ((0, 1), (1, 0), (0, -1), (-1, 0))


def _shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """images moved by (dy, dx) pixels, edges replicated (no wrap-around across the slice)."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    h, w = images.shape[-2:]
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def mind_descriptor(images: torch.Tensor, distance: int = 2, patch_radius: int = 1) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 4, H, W) in [0, 1]: exp(-patch distance to each neighbour / local variance),
    divided by its maximum over the neighbours."""
    images = images.float()
    size = 2 * patch_radius + 1
    distances = torch.cat([F.avg_pool2d((images - _shift(images, dy * distance, dx * distance)) ** 2, size,
                                        stride=1, padding=patch_radius, count_include_pad=False)
                           for dy, dx in OFFSETS], dim=1)
    variance = distances.mean(dim=1, keepdim=True)
    # Bounds on the variance as in the MIND-SSC reference code: flat regions (air) would divide by ~0.
    mean_variance = variance.mean(dim=(2, 3), keepdim=True)
    variance = torch.maximum(torch.minimum(variance, mean_variance * 1000.0), mean_variance * 0.001 + 1e-6)
    descriptor = torch.exp(-distances / variance)
    return descriptor / descriptor.amax(dim=1, keepdim=True)


def structure_loss(inputs: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the MIND descriptors of a translator's input and output."""
    return F.l1_loss(mind_descriptor(translated), mind_descriptor(inputs))
