"""Test-time view averaging: the translation of a slice as the mean of the generator's outputs over a few
views of it (left-right mirrored, and shifted by half the generator's stride), each mapped back.

Why: an unpaired generator draws texture it cannot read from the MR (the skull's two thin tables, its
diploe) and draws it a little differently in each view, since its strided convolutions are not exactly
shift- or mirror-equivariant. The mean keeps what every view agrees on and cancels much of the guessed
texture: on the benchmark's paired check (Testing/benchmarks/results/real_images.md) eight views lowered a
CycleGAN translator's MAE from 127 to 94 HU. The cost is one generator pass per view. Heads are near
mirror-symmetric left-right (the columns of an axial LPS slice), so a mirrored slice is still one the
generator was trained on; shifts wrap around the square's border, which is air in a centred head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DuiitError

if TYPE_CHECKING:  # tensor methods only, so the command line can list VIEW_COUNTS without importing torch
    import torch

VIEW_COUNTS = (1, 2, 4, 8)
# (mirrored, rows shift, columns shift in half-strides), in the order they are added: every count in
# VIEW_COUNTS takes the first views, so 2 = plain + mirrored, 4 adds both shifted diagonally
_VIEWS = ((False, 0, 0), (True, 0, 0), (False, 1, 1), (True, 1, 1),
          (False, 0, 1), (True, 0, 1), (False, 1, 0), (True, 1, 0))


def check_view_count(views: int) -> int:
    if views not in VIEW_COUNTS:
        raise DuiitError(f"views must be one of {', '.join(map(str, VIEW_COUNTS))}, not {views!r}")
    return views


class ViewAveraging:
    """Wraps a generator (a callable on (n, 1, rows, columns) batches) to return the mean over `views` views."""

    def __init__(self, generator, views: int, downsamplings: int):
        self.generator = generator
        self.views = _VIEWS[:check_view_count(views)]
        self.half_stride = max(1, 2 ** downsamplings // 2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for mirrored, rows, columns in self.views:
            shift = (rows * self.half_stride, columns * self.half_stride)
            view = (x.flip(-1) if mirrored else x).roll(shift, dims=(-2, -1))
            out = self.generator(view).roll((-shift[0], -shift[1]), dims=(-2, -1))
            out = out.flip(-1) if mirrored else out
            total = out if total is None else total.add_(out)
        return total.div_(len(self.views)) if len(self.views) > 1 else total
