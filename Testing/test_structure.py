"""The MIND structure loss: blind to how a modality maps tissue to intensity, not to where the edges are."""

import torch

from duiit.structure import mind_descriptor, structure_loss


def head_like_slice(size=48):
    """Brain in a skull ring in scalp on air, with a small lesion: four tissues, sharp edges."""
    y, x = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    radius = (y ** 2 + x ** 2).sqrt()
    tissue = torch.zeros(size, size, dtype=torch.long)             # air
    tissue[radius < 20] = 1                                          # scalp
    tissue[radius < 17] = 2                                          # skull
    tissue[radius < 14] = 3                                          # brain
    tissue[((y - 4) ** 2 + (x + 5) ** 2).sqrt() < 3] = 4            # lesion
    return tissue


def render(tissue, values):
    return torch.tensor(values, dtype=torch.float32)[tissue][None, None]


def test_mind_is_in_unit_range_with_one_neighbour_at_one_per_pixel():
    descriptor = mind_descriptor(torch.rand(2, 1, 32, 32))
    assert descriptor.shape == (2, 4, 32, 32)
    assert descriptor.min() >= 0 and descriptor.max() <= 1
    assert torch.allclose(descriptor.amax(dim=1), torch.ones(2, 32, 32))


def test_another_contrast_of_the_same_anatomy_costs_less_than_moved_anatomy():
    tissue = head_like_slice()
    t1_like = render(tissue, [-1.0, 0.8, -0.9, 0.0, -0.4])   # air, scalp, skull, brain, lesion
    ct_like = render(tissue, [-1.0, -0.5, 0.9, -0.45, -0.35])
    assert structure_loss(t1_like, 0.5 * t1_like - 0.2) < 1e-4
    moved = torch.roll(ct_like, shifts=(3, 2), dims=(2, 3))
    same_anatomy, other_anatomy = structure_loss(t1_like, ct_like), structure_loss(t1_like, moved)
    assert other_anatomy > 2 * same_anatomy, (same_anatomy, other_anatomy)


def test_the_structure_loss_pulls_a_translation_towards_the_input_edges():
    tissue = head_like_slice()
    source = render(tissue, [-1.0, 0.8, -0.9, 0.0, -0.4])
    translated = torch.roll(render(tissue, [-1.0, -0.5, 0.9, -0.45, -0.35]), shifts=(2, 0), dims=(2, 3))
    translated.requires_grad_(True)
    optimizer = torch.optim.Adam([translated], lr=0.02)
    before = structure_loss(source, translated).item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = structure_loss(source, translated)
        loss.backward()
        optimizer.step()
    assert structure_loss(source, translated).item() < 0.7 * before
