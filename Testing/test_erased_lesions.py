"""The erased-lesion counterfactual: DUIIT's guide judges each guided source lesion slice, translated with its
lesion erased, as background."""

import dataclasses

import pytest
import torch

from conftest import tiny_network
from duiit.cohort import BACKGROUND_LABEL, Cohort
from duiit.erased_lesions import erase_lesions
from duiit.errors import DuiitError
from duiit.training import Trainer, TrainingOptions

NETWORK = tiny_network()


def test_a_lesion_is_filled_with_the_median_of_the_head_around_it_and_nothing_else_changes():
    images = torch.full((2, 1, 16, 16), -1.0)  # background
    images[:, :, 2:14, 2:14] = 0.1  # head
    images[0, 0, 3, 4:7] = 0.9  # something bright 3 px from the lesion: the median keeps the tissue's level
    images[0, 0, 6:9, 6:9] = 0.6  # the lesion
    lesions = torch.zeros(images.shape, dtype=torch.bool)
    lesions[0, 0, 6:9, 6:9] = True
    erased = erase_lesions(images, lesions)
    assert torch.allclose(erased[0][lesions[0]], torch.tensor(0.1))
    assert torch.equal(erased[~lesions], images[~lesions])  # outside the lesion, and the lesion-free slice
    assert images[0, 0, 7, 7] == 0.6  # the input is left alone


def test_the_source_slices_carry_their_lesion_masks(cohort):
    source = cohort.source_train
    lesion = cohort.label_names.index("lesion")
    assert source.lesions is not None and source.lesions.shape == source.images.shape
    marked = source.lesions.flatten(1).any(dim=1)
    assert torch.equal(marked, source.labels == lesion)  # the masks are what labels the slices
    assert (source.images.float()[source.lesions] > source.images.float()[~source.lesions].median()).all()


def trainer_for(cohort, **options):
    defaults = dict(iterations=4, batch_size=4, warmup=0.0, ramp=0.0, seed=3, guide_classes="lesion",
                    guide_erased_lesions=True)
    return Trainer(cohort, TrainingOptions(**{**defaults, **options}), NETWORK, torch.device("cpu"))


def test_the_guide_judges_each_guided_lesion_slice_erased_as_background_and_its_push_reaches_g(cohort):
    trainer = trainer_for(cohort)
    calls = []
    original = trainer.guidance_loss

    def recording(fake_target, source_labels, source_weights=None, erased=None):
        calls.append((source_labels.clone(), erased))
        return original(fake_target, source_labels, source_weights, erased)

    trainer.guidance_loss = recording
    trainer.run()
    lesion = cohort.label_names.index("lesion")
    with_erased = [(labels, erased) for labels, erased in calls if erased is not None]
    assert with_erased, "no batch held a lesion slice"
    for labels, (fake_erased, _) in with_erased:
        assert len(fake_erased) == int((labels == lesion).sum())  # one erased slice per guided lesion slice
        assert fake_erased.requires_grad  # translated by G in the step: the guide's push on it reaches G
    assert all(erased is None for labels, erased in calls if not (labels == lesion).any())


def test_the_erased_slice_is_labelled_background_in_the_guide_s_loss(cohort):
    trainer = trainer_for(cohort)
    lesion, background = (cohort.label_names.index(n) for n in ("lesion", BACKGROUND_LABEL))
    fake = torch.zeros(2, 1, 32, 32, requires_grad=True)
    labels = torch.tensor([lesion, background])
    judged = []
    guide = trainer.predictor
    trainer.predictor = lambda images: judged.append(images) or guide(images)
    trainer.guidance_loss(fake, labels, None, (fake[:1] + 1.0, None))
    assert len(judged[0]) == 2 and torch.equal(judged[0][1], fake[0] + 1.0)  # the lesion slice, then its erased
    # the loss is the cross-entropy of [lesion slice as lesion, erased as background]
    trainer.predictor = guide
    expected = torch.nn.functional.cross_entropy(guide(judged[0]), torch.tensor([lesion, background]))
    assert torch.allclose(trainer.guidance_loss(fake, labels, None, (fake[:1] + 1.0, None)), expected)


def test_erased_lesions_need_duiit_a_classification_and_masked_source_lesions(cohort):
    with pytest.raises(DuiitError, match="--guide-erased-lesions .* not cyclegan"):
        trainer_for(cohort, method="cyclegan")
    source = cohort.source_train
    unmasked = Cohort(**{**{f.name: getattr(cohort, f.name) for f in dataclasses.fields(cohort)},
                         "source_train": dataclasses.replace(source, lesions=None)})
    with pytest.raises(DuiitError, match="no source training case has a lesion mask"):
        trainer_for(unmasked)


def recorded_predictor_batches(trainer):
    """(extra images, extra labels) of each joint predictor step of a run."""
    batches = []
    original = trainer.predictor_step

    def recording(target, target_labels, extra=None, extra_labels=None, extra_weights=None, **kwargs):
        if kwargs.get("name", "predictor") == "predictor":
            batches.append((extra, extra_labels))
        return original(target, target_labels, extra, extra_labels, extra_weights, **kwargs)

    trainer.predictor_step = recording
    trainer.run()
    return batches


def test_with_predictor_erased_lesions_the_predictor_learns_each_erased_translation_as_background(cohort):
    lesion, background = (cohort.label_names.index(n) for n in ("lesion", BACKGROUND_LABEL))
    plain = recorded_predictor_batches(trainer_for(cohort))
    counterfactual = recorded_predictor_batches(trainer_for(cohort, predictor_erased_lesions=True))
    assert len(plain) == len(counterfactual) > 0
    grew = 0
    for (images, labels), (images_cf, labels_cf) in zip(plain, counterfactual):
        n, lesions = len(labels), int((labels == lesion).sum())  # the same seed draws the same batches
        assert torch.equal(labels_cf[:n], labels) and len(labels_cf) == n + lesions  # one per lesion slice
        assert (labels_cf[n:] == background).all()
        assert not images_cf.requires_grad  # C's own step: its loss on them does not reach G here
        grew += lesions
    assert grew > 0, "no batch held a lesion slice"


def test_predictor_erased_lesions_need_the_guide_s_counterfactual(cohort):
    with pytest.raises(DuiitError, match="--predictor-erased-lesions .* give both"):
        trainer_for(cohort, guide_erased_lesions=False, predictor_erased_lesions=True)
