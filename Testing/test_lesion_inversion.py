"""Inverted lesions for the target guide: each CT training lesion mirrored about its ring, labelled background."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny_network
from duiit.cohort import BACKGROUND_LABEL
from duiit.errors import DuiitError
from duiit.lesion_inversion import invert_lesions, inverted_lesion_slices, ring
from duiit.training import Trainer, TrainingOptions

NETWORK = tiny_network()


def test_each_slice_s_lesion_is_mirrored_about_the_median_of_its_ring():
    volume = np.full((3, 16, 16), 30.0, np.float32)
    lesion = np.zeros(volume.shape, bool)
    lesion[1, 6:9, 6:9] = True
    volume[1][lesion[1]] = 80.0
    volume[1, 4, 3:6] = 1000.0  # bone in the ring (2 voxels from the lesion): its median stays the tissue's
    around = ring(lesion)
    assert not (around & lesion).any() and not around[0].any() and not around[1, 5, 6]  # 1 voxel away: no
    assert around[1, 4, 6] and around[1, 3, 7] and not around[1, 2, 7]  # 2 and 3 voxels away: yes; 4: no
    assert 2 * volume[1][around[1]].mean() - 80.0 > 30.0  # mirrored about the mean, it would not be dark
    inverted = invert_lesions(volume, lesion, around)
    assert np.allclose(inverted[1][lesion[1]], 2 * 30.0 - 80.0)
    assert np.array_equal(inverted[~lesion], volume[~lesion]) and inverted.dtype == np.float32
    assert volume[1, 7, 7] == 80.0  # the input is left alone


def test_the_inverted_set_is_the_training_lesion_slices_drawn_dark_and_labelled_background(cohort):
    inverted = inverted_lesion_slices(cohort.target_train.cases, NETWORK.image_size, cohort.label_names)
    lesion = cohort.label_names.index("lesion")
    originals = cohort.target_train.images[cohort.target_train.labels == lesion].float()
    assert len(inverted) == len(originals) > 0
    assert torch.equal(inverted.labels, torch.full((len(inverted),), cohort.label_names.index(BACKGROUND_LABEL)))
    change = inverted.images.float() - originals
    changed = change.abs() > 1e-3
    assert changed.any(dim=(1, 2, 3)).all()  # every slice has its lesion inverted ...
    assert changed.float().mean() < 0.05  # ... and only its lesion (and the voxels blurred into it)
    assert (change.sum(dim=(1, 2, 3)) < 0).all()  # the phantom's hyperdense lesions now darker than before
    assert all(cohort.target_train.cases[i].mask is not None for i in inverted.case_index.tolist())


def test_inverted_lesions_need_masked_lesions_and_a_background_class(cohort):
    unmasked = [dataclasses.replace(c, mask=None) for c in cohort.target_train.cases]
    with pytest.raises(DuiitError, match="lesion masks that mark a lesion; none of"):
        inverted_lesion_slices(unmasked, NETWORK.image_size, cohort.label_names)
    with pytest.raises(DuiitError, match="'none', which is not a class"):
        inverted_lesion_slices(cohort.target_train.cases, NETWORK.image_size, ["healthy", "lesion"])


def trainer_for(cohort, **options):
    defaults = dict(iterations=2, batch_size=2, warmup=0.0, ramp=0.0, seed=3, guide_predictor="target")
    return Trainer(cohort, TrainingOptions(**{**defaults, **options}), NETWORK, torch.device("cpu"))


def test_the_target_guide_and_only_it_learns_the_inverted_lesions_as_background(cohort):
    trainer = trainer_for(cohort, guide_inverted_lesions=True, guide_pretrain=2)
    inverted = trainer.inverted_sampler.slices
    seen = []
    original_step = trainer.predictor_step

    def recording(target, target_labels, extra=None, extra_labels=None, *args, **kwargs):
        seen.append((kwargs.get("name", "predictor"), extra, extra_labels, kwargs.get("extra_scale")))
        return original_step(target, target_labels, extra, extra_labels, *args, **kwargs)

    trainer.predictor_step = recording
    trainer.run()
    guide_calls = [s for s in seen if s[0] == "guide_predictor"]
    assert len(guide_calls) == 4  # 2 guide-only steps, 2 joint steps
    background = cohort.label_names.index(BACKGROUND_LABEL)
    for _, extra, labels, scale in guide_calls:
        assert len(extra) == 1 and scale == 1.0 and torch.equal(labels, torch.tensor([background]))
        assert any(torch.equal(extra[0].half(), image) for image in inverted.images)
    for _, extra, _, _ in (s for s in seen if s[0] == "predictor"):
        assert not any(torch.equal(extra[0].half(), image) for image in inverted.images)  # C: G(MR), not these
    assert trainer_for(cohort).inverted_sampler is None


@pytest.mark.parametrize("options, problem", [({"guide_predictor": "joint"}, "not duiit with the joint guide"),
                                              ({"method": "cyclegan"}, "not cyclegan with the target guide")])
def test_inverted_lesions_without_duiit_s_target_guide_are_refused(cohort, options, problem):
    with pytest.raises(DuiitError, match=f"--guide-inverted-lesions teaches the target guide.*{problem}"):
        trainer_for(cohort, guide_inverted_lesions=True, **options)
