"""The predictor's training slices are mirrored and shifted at random, reproducibly, without wrapping around."""

import torch

from duiit.augmentation import mirror_and_shift


def dots(n, size=16):
    """Background -1 with one bright pixel per image, at a different place in each."""
    images = torch.full((n, 1, size, size), -1.0)
    for i in range(n):
        images[i, 0, 4 + i % 5, 3 + 2 * (i % 4)] = 1.0
    return images


def test_each_dot_lands_mirrored_or_not_within_the_shift_and_nothing_wraps_round():
    images, shift = dots(40), 2
    out = mirror_and_shift(images, shift, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert torch.all((out == 1.0).flatten(1).sum(1) == 1)  # one dot each: moved, never duplicated or lost
    assert torch.all(out[out != 1.0] == -1.0)              # the uncovered edge takes the edge's value
    size = images.shape[-1]
    mirrored_seen = plain_seen = False
    for before, after in zip(images, out):
        (y0, x0), (y1, x1) = [(p[1].item(), p[2].item()) for p in ((before == 1).nonzero()[0], (after == 1).nonzero()[0])]
        assert abs(y1 - y0) <= shift
        plain, mirrored = abs(x1 - x0) <= shift, abs(x1 - (size - 1 - x0)) <= shift
        assert plain or mirrored
        mirrored_seen |= mirrored and not plain
        plain_seen |= plain and not mirrored
    assert mirrored_seen and plain_seen


def test_the_same_generator_state_gives_the_same_images():
    images = dots(8)
    first = mirror_and_shift(images, 3, torch.Generator().manual_seed(5))
    assert torch.equal(first, mirror_and_shift(images, 3, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, mirror_and_shift(images, 3, torch.Generator().manual_seed(6)))


def test_a_shift_fills_from_the_edge_instead_of_wrapping_round():
    ramp = torch.arange(16.0).expand(16, 16).repeat(30, 1, 1, 1)  # each row rises from the left edge to the right
    out = mirror_and_shift(ramp, 3, torch.Generator().manual_seed(1))
    steps = out.diff(dim=-1)
    rising, falling = (steps >= 0).flatten(1).all(1), (steps <= 0).flatten(1).all(1)
    assert torch.all(rising | falling)  # a wrap would put the right edge's 15 beside the left edge's 0
    assert rising.any() and falling.any()
    assert not torch.equal(out, ramp)
