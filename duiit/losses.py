"""Losses: least-squares GAN (LSGAN) and the prediction task (cross-entropy or MSE)."""

import torch
import torch.nn.functional as F


def gan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), 1.0 if real else 0.0))


def task_loss(outputs: torch.Tensor, labels: torch.Tensor, task: str, floor: float = 0.0,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy for classes; MSE on standardised values for regression.

    floor > 0 (for the translator's guidance): each slice's loss counts only above the floor, so once C is
    confident on a translated slice G is no longer pushed to make it ever more conspicuous (a label
    shortcut that real CT does not have). weights: per slice (see training.balancing_weights)."""
    outputs = outputs.float()
    if task == "classification":
        per_slice = F.cross_entropy(outputs, labels, reduction="none")
    else:
        per_slice = F.mse_loss(outputs[:, 0], labels, reduction="none")
    if floor > 0:
        per_slice = (per_slice - floor).clamp(min=0.0)
    if weights is not None:
        per_slice = per_slice * weights
    return per_slice.mean()
