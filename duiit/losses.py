"""Losses: least-squares GAN (LSGAN) and the prediction task (cross-entropy or MSE)."""

import torch
import torch.nn.functional as F


def gan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), 1.0 if real else 0.0))


def task_loss(outputs: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy for classes; MSE on standardised values for regression."""
    outputs = outputs.float()
    if task == "classification":
        return F.cross_entropy(outputs, labels)
    return F.mse_loss(outputs[:, 0], labels)
