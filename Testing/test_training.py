"""The training loop: guidance reaches G (and not in the ablation), every method trains, resume is exact."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import ROOT, run_torchrun, tiny_network
from duiit.checkpoint import load_checkpoint
from duiit.cohort import SliceSet, build_cohort
from duiit.errors import DuiitError
from duiit.head_depth import head_depth
from duiit.losses import task_loss
from duiit.manifest import read_manifest
from duiit.normalisation import bend_standard
from duiit.phantom import write_phantom_cohort
from duiit.structure import structure_loss
from duiit.training import Trainer, TrainingOptions, balancing_weights, task_weight

NETWORK = tiny_network()
DEPTH_NETWORK = dataclasses.replace(NETWORK, discriminator_head_depth=4)


@pytest.fixture(scope="module")
def cohort_with_unlabelled_ct(tmp_path_factory):
    manifest = write_phantom_cohort(tmp_path_factory.mktemp("unlabelled"), n_ct=6, n_source=6, shape=(12, 32, 32),
                                    n_ct_unlabelled=4)
    return build_cohort(read_manifest(manifest), "MR", "CT", "classification", NETWORK.image_size, seed=0)


def test_mr_volumes_are_mapped_onto_one_standard_unless_asked_not_to(mr_cohort, cohort):
    plain = build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", NETWORK.image_size, seed=0,
                         mr_standard=False)
    assert plain.source_standard is None and cohort.source_standard is not None
    mr = [c["normalisation"] for c in cohort.summary["cases"] if c["modality"] == "MR"]
    assert mr and all(r["standardisation"]["to_unit"][1:-1] == cohort.source_standard for r in mr)
    assert not any("standardisation" in c["normalisation"] for c in plain.summary["cases"])
    assert torch.equal(plain.target_train.images, cohort.target_train.images)  # CT is never touched
    assert not torch.equal(plain.source_train.images, cohort.source_train.images)


def test_contrast_jitter_bends_the_standard_per_mr_volume_reproducibly(mr_cohort, cohort):
    def jittered(seed):
        return build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", NETWORK.image_size, seed=seed,
                            mr_contrast_jitter=0.15)
    first, again, other_seed = jittered(0), jittered(0), jittered(1)
    assert first.source_standard == cohort.source_standard  # the standard itself, as translation uses it
    mr = [c["normalisation"] for c in first.summary["cases"] if c["modality"] == "MR"]
    gammas = [r["contrast_gamma"] for r in mr]
    assert all(0.85 <= g <= 1.15 for g in gammas) and len(set(gammas)) == len(gammas)
    for record in mr:
        assert np.allclose(record["standardisation"]["to_unit"][1:-1],
                           bend_standard(cohort.source_standard, record["contrast_gamma"]))
    assert torch.equal(first.source_train.images, again.source_train.images)
    assert torch.equal(first.target_train.images, cohort.target_train.images)  # CT is never touched
    assert not torch.equal(first.source_train.images, cohort.source_train.images)
    assert gammas != [r["normalisation"]["contrast_gamma"] for r in other_seed.summary["cases"]
                      if r["modality"] == "MR"]
    # the benchmark keeps seed 0's split and draws the gammas per training seed
    split_kept = build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", NETWORK.image_size, seed=0,
                              mr_contrast_jitter=0.15, contrast_seed=1)
    assert split_kept.summary["patients"] == first.summary["patients"]
    assert torch.equal(split_kept.target_test.images, first.target_test.images)
    by_patient = {r["patient_id"]: r["normalisation"].get("contrast_gamma") for r in other_seed.summary["cases"]}
    assert [r["normalisation"]["contrast_gamma"] for r in split_kept.summary["cases"] if r["modality"] == "MR"] \
        == [by_patient[r["patient_id"]] for r in split_kept.summary["cases"] if r["modality"] == "MR"]
    with pytest.raises(DuiitError, match="contrast jitter"):
        build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", NETWORK.image_size, seed=0,
                     mr_contrast_jitter=1.0)
    with pytest.raises(DuiitError, match="MR standard is off"):
        build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", NETWORK.image_size, seed=0,
                     mr_standard=False, mr_contrast_jitter=0.1)


def test_a_volumes_contrast_gamma_follows_the_seed_not_its_folder_or_row():
    from pathlib import Path

    from duiit.cohort import contrast_gamma
    from duiit.manifest import Case
    here = Case(Path("/data/a/mr_01.nii.gz"), "MR", "lesion", "P1", row=3)
    moved = Case(Path("/elsewhere/mr_01.nii.gz"), "MR", "lesion", "P1", row=9)
    assert contrast_gamma(here, 0, 0.15) == contrast_gamma(moved, 0, 0.15)
    assert contrast_gamma(here, 0, 0.15) != contrast_gamma(here, 1, 0.15)
    assert contrast_gamma(here, 0, 0.15) != contrast_gamma(Case(here.path, "MR", "lesion", "P2"), 0, 0.15)


def trainer_for(cohort, tmp_path=None, network=NETWORK, **options):
    defaults = dict(iterations=6, batch_size=2, warmup=0.0, ramp=0.0, checkpoint_every=3, seed=3)
    return Trainer(cohort, TrainingOptions(**{**defaults, **options}), network, torch.device("cpu"),
                   checkpoint_path=None if tmp_path is None else tmp_path / "m.duiit.ckpt")


def g_gradient_of_task_term(trainer, weight):
    source, labels = trainer.source_sampler.sample(2, "cpu")
    target, _ = trainer.target_sampler.sample(2, "cpu")
    _, parts, _ = trainer.generator_loss(source, target, labels, weight)
    g_params = list(trainer.translator.to_target.parameters())
    if "task_g" not in parts:
        return 0.0
    grads = torch.autograd.grad(parts["task_g"], g_params, allow_unused=True)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_task_gradient_reaches_g_in_duiit_and_not_in_the_ablation(cohort):
    guided = trainer_for(cohort)
    weight = task_weight(guided.options, 1, 6)
    assert weight == pytest.approx(1.0)
    assert g_gradient_of_task_term(guided, weight) > 0

    ablation = trainer_for(cohort, guidance=False)
    assert task_weight(ablation.options, 6, 6) == 0.0
    assert g_gradient_of_task_term(ablation, task_weight(ablation.options, 6, 6)) == 0.0


def test_guided_and_unguided_steps_update_g_differently(cohort):
    """Same seed and batches: only the task term differs, so G's weights must differ after a step."""
    weights = []
    for guidance in (True, False):
        trainer = trainer_for(cohort, guidance=guidance, iterations=1)
        trainer.run()
        weights.append(torch.cat([p.flatten() for p in trainer.translator.to_target.parameters()]))
    assert not torch.allclose(weights[0], weights[1])


def test_task_floor_drops_the_slices_c_is_already_sure_of():
    outputs = torch.tensor([[4.0, -4.0], [0.0, 0.0], [-1.0, 1.0]], requires_grad=True)  # sure, unsure, wrong
    labels = torch.tensor([0, 0, 0])
    plain = task_loss(outputs, labels, "classification")
    floored = task_loss(outputs, labels, "classification", floor=0.2)
    (gradient,) = torch.autograd.grad(floored, outputs)
    assert gradient[0].abs().sum() == 0 and gradient[1].abs().sum() > 0 and gradient[2].abs().sum() > 0
    assert 0 < floored < plain
    values = torch.tensor([[0.1], [2.0]])
    assert task_loss(values, torch.tensor([0.0, 0.0]), "regression", floor=0.5) == pytest.approx((4.0 - 0.5) / 2)


def test_guide_classes_steer_g_with_those_slices_only(cohort):
    trainer = trainer_for(cohort, guide_classes="lesion")
    lesion, none = cohort.label_names.index("lesion"), cohort.label_names.index("none")
    source, _ = trainer.source_sampler.sample(4, "cpu")
    target, _ = trainer.target_sampler.sample(4, "cpu")
    _, parts, _ = trainer.generator_loss(source, target, torch.full((4,), none), 1.0)
    assert parts["task_g"].item() == 0.0                       # lesion-free slices do not push G
    grads = torch.autograd.grad(parts["task_g"], list(trainer.translator.to_target.parameters()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    labels = torch.tensor([lesion, none, lesion, none])
    torch.manual_seed(0)
    _, parts, out = trainer.generator_loss(source, target, labels, 1.0)
    expected = task_loss(trainer.predictor(out["fake_target"][labels == lesion]), labels[labels == lesion],
                         "classification")
    assert parts["task_g"].item() == pytest.approx(expected.item(), rel=1e-4)
    with pytest.raises(DuiitError, match="'tumour' is not a label"):
        trainer_for(cohort, guide_classes="tumour")


def test_a_target_trained_guide_predictor_steers_g_and_never_learns_from_g_of_source(cohort):
    trainer = trainer_for(cohort, guide_predictor="target", iterations=3)
    guide = trainer.guide_predictor
    assert guide is not None and guide is not trainer.predictor
    source, labels = trainer.source_sampler.sample(2, "cpu")
    target, _ = trainer.target_sampler.sample(2, "cpu")
    _, parts, out = trainer.generator_loss(source, target, labels, 1.0)
    assert parts["task_g"].item() == pytest.approx(task_loss(guide(out["fake_target"]), labels, "classification").item(),
                                                   rel=1e-4)
    assert parts["task_g"].item() != pytest.approx(
        task_loss(trainer.predictor(out["fake_target"]), labels, "classification").item(), rel=1e-4)

    targets, seen = [], []
    sample = trainer.target_sampler.sample
    trainer.target_sampler.sample = lambda *a: targets.append(sample(*a)) or targets[-1]
    guide.register_forward_hook(lambda module, inputs, output: seen.append(
        (inputs[0].detach().clone(), any(p.requires_grad for p in module.parameters()))))
    trainer.run()
    learning = [images for images, trainable in seen if trainable]
    steering = [images for images, trainable in seen if not trainable]
    assert len(learning) == 3 and len(steering) == 3        # one update on real CT, one push on G, per step
    assert all(any(torch.equal(images, t) for t, _ in targets) for images in learning)
    assert all("guide_task_real" in h for h in trainer.history)
    assert "guide_predictor" in trainer.state()["modules"] and "guide_predictor" in trainer.state()["optimizers"]
    assert trainer_for(cohort, method="cyclegan", guide_predictor="target").guide_predictor is None
    with pytest.raises(DuiitError, match="guide predictor 'both'"):
        trainer_for(cohort, guide_predictor="both")


def test_guide_pretraining_trains_the_target_guide_alone_before_the_joint_phase(cohort):
    trainer = trainer_for(cohort, guide_predictor="target", guide_pretrain=4, iterations=2)
    assert trainer.phases == [("guide", 4), ("joint", 2)] and trainer.total_steps == 6
    before = {name: {k: v.clone() for k, v in module.state_dict().items()}
              for name, module in trainer.modules().items()}
    trainer.phases, trainer.total_steps = [("guide", 4)], 4
    trainer.run()
    changed = {name for name, module in trainer.modules().items()
               if any(not torch.equal(before[name][k], v) for k, v in module.state_dict().items())}
    assert changed == {"guide_predictor"}  # G, D and the joint C wait for the joint phase
    assert [h["phase"] for h in trainer.history] == ["guide"] * 4
    assert all(set(h) == {"step", "phase", "guide_task_real"} for h in trainer.history)

    full = trainer_for(cohort, guide_predictor="target", guide_pretrain=4, iterations=2)
    full.run()
    assert [h["phase"] for h in full.history] == ["guide"] * 4 + ["joint"] * 2
    for options, problem in (({"guide_pretrain": 3}, "needs method duiit with --guide-predictor target"),
                             ({"guide_pretrain": 3, "method": "cyclegan", "guide_predictor": "target"},
                              "not cyclegan"),
                             ({"guide_pretrain": -1, "guide_predictor": "target"}, "must be 0 .off. or more")):
        with pytest.raises(DuiitError, match=problem):
            trainer_for(cohort, **options)


def test_a_run_with_guide_pretraining_resumes_in_the_joint_phase_to_the_same_weights(cohort, tmp_path):
    options = dict(guide_predictor="target", guide_pretrain=2, iterations=3)
    (tmp_path / "a").mkdir()
    straight = trainer_for(cohort, tmp_path / "a", **options)
    straight.run()
    (tmp_path / "b").mkdir()
    first = trainer_for(cohort, tmp_path / "b", **options)  # checkpoints at steps 3 and 5
    original_step, calls = first.joint_step, []

    def joint_step_then_die(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed at step 5: the checkpoint of step 3 (one joint step) is on disk
        calls.append(1)
        return original_step(*args, **kwargs)

    first.joint_step = joint_step_then_die
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed = trainer_for(cohort, tmp_path / "b", **options)
    resumed.run(resume=True)
    assert [h["phase"] for h in resumed.history] == ["guide", "guide", "joint", "joint", "joint"]
    for a, b in zip(straight.state()["modules"].values(), resumed.state()["modules"].values()):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_the_structure_loss_reaches_both_generators_only_when_weighted(cohort):
    plain = trainer_for(cohort)
    source, labels = plain.source_sampler.sample(2, "cpu")
    target, _ = plain.target_sampler.sample(2, "cpu")
    _, parts, _ = plain.generator_loss(source, target, labels, 0.0)
    assert "structure" not in parts                            # off by default: runs as before
    trainer = trainer_for(cohort, lambda_structure=5.0)
    _, parts, out = trainer.generator_loss(source, target, labels, 0.0)
    assert parts["structure"].item() == pytest.approx(
        (structure_loss(source, out["fake_target"]) + structure_loss(target, out["fake_source"])).item(), rel=1e-5)
    for generator in (trainer.translator.to_target, trainer.translator.to_source):
        grads = torch.autograd.grad(parts["structure"], list(generator.parameters()), retain_graph=True,
                                    allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_the_translator_average_is_a_moving_average_of_g_and_f_and_what_translates(cohort):
    def flat(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    trainer = trainer_for(cohort, method="cyclegan", translator_ema=0.6)
    expected = None
    for iteration in range(1, 5):
        trainer.joint_step(iteration, 6, with_predictor=False)
        live = flat(trainer.translator)
        past = min(0.6, 1 - 1 / iteration)  # the mean of the weights so far until the window (2.5 steps) is full
        expected = live if expected is None else past * expected + (1 - past) * live
    assert torch.allclose(flat(trainer.deployed_translator()), expected, atol=1e-6)
    assert not torch.allclose(flat(trainer.translator), expected)
    first = trainer.cohort.source_train.images[:1].float()
    translated = trainer.translate_source().images[:1].float()
    with torch.no_grad():
        by_average = (translated - trainer.deployed_translator().to_target(first)).abs().max()
        by_live = (translated - trainer.translator.to_target(first)).abs().max()
    assert by_average < 1e-2 < by_live, (by_average, by_live)  # cyclegan's second stage translates with it
    plain = trainer_for(cohort, method="cyclegan", translator_ema=0.0)
    assert plain.deployed_translator() is plain.translator and "translator_average" not in plain.state()["modules"]


def test_task_weight_is_zero_during_warm_up_then_ramps():
    options = TrainingOptions(iterations=100, warmup=0.2, ramp=0.2, lambda_task=2.0)
    values = [task_weight(options, i, 100) for i in (1, 20, 30, 40, 100)]
    assert values == [0.0, 0.0, pytest.approx(1.0), pytest.approx(2.0), pytest.approx(2.0)]


@pytest.mark.parametrize("method", ["duiit", "cyclegan", "naive", "target-only"])
def test_every_method_trains_and_evaluates_on_real_ct(cohort, method):
    trainer = trainer_for(cohort, method=method, iterations=3)
    trainer.run()
    assert trainer.step == (6 if method == "cyclegan" else 3)
    assert (trainer.translator is not None) == (method in ("duiit", "cyclegan"))
    phases = {h["phase"] for h in trainer.history}
    assert phases == {"duiit": {"joint"}, "cyclegan": {"translator", "predictor"}}.get(method, {"predictor"})
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["val"]["slice"]["accuracy"] <= 1.0
    # the validation set holds real CT patients only, none seen in training
    train_patients = {c.patient_id for c in cohort.target_train.cases}
    assert not train_patients & {c.patient_id for c in cohort.target_val.cases}
    assert all(c.modality == "CT" for c in cohort.target_val.cases)


@pytest.mark.parametrize("data, options", [("cohort", {}), ("cohort_with_unlabelled_ct", {}),
                                           ("cohort", {"translator_ema": 0.9}), ("cohort", {"predictor_augment": True}),
                                           ("cohort", {"depth_from_input": True, "network": DEPTH_NETWORK})])
def test_resume_continues_to_the_same_weights(data, options, request, tmp_path):
    cohort = request.getfixturevalue(data)
    straight = trainer_for(cohort, tmp_path / "a", iterations=6, **options)
    (tmp_path / "a").mkdir()
    straight.run()

    (tmp_path / "b").mkdir()
    first = trainer_for(cohort, tmp_path / "b", iterations=6, **options)
    first.phases = [("joint", 6)]
    first.total_steps = 6
    # stop after the checkpoint at step 3, as a killed process would
    first.options.checkpoint_every = 3
    original_step = first.joint_step
    calls = []

    def joint_step_then_die(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed between checkpoints: step 4 is lost, step 3 is on disk
        calls.append(1)
        return original_step(*args, **kwargs)

    first.joint_step = joint_step_then_die
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed = trainer_for(cohort, tmp_path / "b", iterations=6, **options)
    resumed.run(resume=True)
    assert resumed.step == 6
    assert straight.state()["modules"].keys() == resumed.state()["modules"].keys()
    for a, b in zip(straight.state()["modules"].values(), resumed.state()["modules"].values()):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert [h["step"] for h in resumed.history] == list(range(1, 7))


def test_with_depth_from_input_d_judges_each_translation_by_its_input_and_pools_the_two_together(cohort):
    trainer = trainer_for(cohort, network=DEPTH_NETWORK, depth_from_input=True)
    seen = []  # (discriminator, images, depth map given)
    for name in ("target", "source"):
        judge = getattr(trainer.discriminators, name)
        judge.forward = lambda x, depth=None, judge=judge, name=name: (
            seen.append((name, x, depth)), type(judge).forward(judge, x, depth))[1]
    source, labels = trainer.source_sampler.sample(2, "cpu")
    target, _ = trainer.target_sampler.sample(2, "cpu")
    trainer.generator_loss(source, target, labels, 0.0)
    by_name = {name: depth for name, _, depth in seen}
    assert torch.equal(by_name["target"], head_depth(source, 4))  # G(MR) by the MR's outline
    assert torch.equal(by_name["source"], head_depth(target, 4))  # F(CT) by the CT's
    seen.clear()
    trainer.joint_step(1, 6, with_predictor=True)
    (_, images, depth), = [entry for entry in seen if entry[0] == "target" and entry[1].shape[0] == 4]  # D's update
    pooled = trainer.pools["target"].images
    assert len(pooled) == 2 and all(image.shape[1] == 2 for image in pooled)  # each fake beside its depth map
    assert torch.equal(depth[2:], torch.cat(pooled)[:, 1:])        # the fakes (pool not yet full: as given)
    assert torch.equal(images[2:], torch.cat(pooled)[:, :1])
    assert torch.equal(depth[:2], head_depth(images[:2], 4))       # the real CTs by their own outline
    plain = trainer_for(cohort, network=DEPTH_NETWORK)
    assert plain.input_depths(source, target) == (None, None)      # off: every image by its own outline


def test_resume_with_other_options_is_refused(cohort, tmp_path):
    trainer = trainer_for(cohort, tmp_path, iterations=3)
    trainer.run()
    other = trainer_for(cohort, tmp_path, iterations=3, lambda_task=5.0)
    with pytest.raises(DuiitError, match="lambda_task"):
        other.run(resume=True)


def test_a_checkpoint_from_before_an_option_resumes_with_its_default(cohort, tmp_path):
    trainer = trainer_for(cohort, tmp_path, iterations=6)
    trainer.options.checkpoint_every = 3
    trainer.phases, trainer.total_steps = [("joint", 3)], 3
    trainer.run()
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    del state["options"]["guide_predictor"]                  # as written before the option existed
    torch.save(state, trainer.checkpoint_path)
    resumed = trainer_for(cohort, tmp_path, iterations=6)
    with pytest.raises(DuiitError, match="guide_predictor=None"):  # without the defaults it would be refused
        load_checkpoint(trainer.checkpoint_path, resumed.options.fingerprint())
    resumed.run(resume=True)
    assert resumed.step == 6


def test_a_checkpoint_without_the_translator_average_starts_it_from_the_resumed_weights(cohort, tmp_path):
    trainer = trainer_for(cohort, tmp_path, method="cyclegan", iterations=3)
    trainer.phases, trainer.total_steps = [("translator", 3)], 3    # stops with the checkpoint at step 3
    trainer.run()
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    del state["options"]["translator_ema"], state["modules"]["translator_average"]  # as written before it existed
    torch.save(state, trainer.checkpoint_path)
    resumed = trainer_for(cohort, tmp_path, method="cyclegan", iterations=3)
    resumed.run(resume=True)                                         # the predictor phase: G/F no longer move
    assert resumed.step == 6
    for name, value in resumed.deployed_translator().state_dict().items():
        assert torch.equal(value, resumed.translator.state_dict()[name]), name


def test_unlabelled_ct_is_kept_apart_from_the_labelled_sets(cohort_with_unlabelled_ct, cohort):
    unlabelled = cohort_with_unlabelled_ct.target_unlabelled
    assert [c.patient_id for c in unlabelled.cases] == ["CTU00", "CTU01", "CTU02", "CTU03"]
    assert len(unlabelled) > 0 and bool((unlabelled.labels == -1).all())
    for name in ("target_train", "target_val", "source_train"):
        labelled = getattr(cohort_with_unlabelled_ct, name)
        assert not {c.patient_id for c in labelled.cases} & {c.patient_id for c in unlabelled.cases}
        assert torch.equal(labelled.images, getattr(cohort, name).images)  # the same labelled cohort
    assert cohort_with_unlabelled_ct.label_names == cohort.label_names
    assert cohort_with_unlabelled_ct.summary["counts"]["target_unlabelled"]["cases"] == 4
    assert len(cohort_with_unlabelled_ct.translator_target) == len(unlabelled) + len(cohort.target_train)
    assert cohort.translator_target is cohort.target_train


@pytest.mark.parametrize("method", ["duiit", "cyclegan"])
def test_unlabelled_ct_reaches_the_translator_and_never_the_predictor(cohort_with_unlabelled_ct, method):
    cohort = cohort_with_unlabelled_ct
    trainer = trainer_for(cohort, method=method, iterations=8, batch_size=4)
    unlabelled = cohort.target_unlabelled.images.float()

    def unlabelled_rows(images):
        return int(sum(bool((unlabelled == image).flatten(1).all(1).any()) for image in images.float()))

    real_to_discriminator, to_predictor = [], []
    trainer.discriminators.target.register_forward_hook(
        lambda module, inputs, output: real_to_discriminator.append(unlabelled_rows(inputs[0][:4])))
    trainer.predictor.register_forward_hook(
        lambda module, inputs, output: to_predictor.append(unlabelled_rows(inputs[0])))
    trainer.run()
    assert sum(real_to_discriminator) > 0       # D_CT's real batches include unlabelled CT
    assert to_predictor and sum(to_predictor) == 0


def test_balancing_weights_make_uniform_draws_count_as_class_balanced_ones():
    labels = torch.tensor([0, 0, 0, 2, 0, 2, 0, 0])             # class 1 absent, 2 is rare
    slices = SliceSet(torch.zeros(8, 1, 4, 4), labels, torch.zeros(8, dtype=torch.long), [])
    weights = balancing_weights(slices)
    assert weights[1] == 0
    per_class = [float(weights[labels][labels == k].sum()) / len(labels) for k in (0, 2)]
    assert per_class == pytest.approx([0.5, 0.5])              # each present class counts 1/K
    outputs, targets = torch.randn(8, 3), labels
    weighted = task_loss(outputs, targets, "classification", weights=weights[targets])
    plain = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
    balanced = 0.5 * plain[labels == 0].mean() + 0.5 * plain[labels == 2].mean()
    assert weighted.item() == pytest.approx(balanced.item())


def test_with_unlabelled_ct_the_translator_draws_source_at_its_natural_class_frequency(cohort_with_unlabelled_ct,
                                                                                      cohort):
    lesion = cohort.label_names.index("lesion")
    natural = float((cohort.source_train.labels == lesion).float().mean())
    assert natural < 0.4                                         # else the test could not tell the two apart
    for data, expected in ((cohort, 0.5), (cohort_with_unlabelled_ct, natural)):
        trainer = trainer_for(data)
        _, labels = trainer.translator_source_sampler.sample(4000, "cpu")
        assert float((labels == lesion).float().mean()) == pytest.approx(expected, abs=0.03)
    assert trainer.source_class_weights is not None and trainer_for(cohort).source_class_weights is None
    _, labels = trainer.source_sampler.sample(4000, "cpu")       # naive's untranslated batches stay balanced
    assert float((labels == lesion).float().mean()) == pytest.approx(0.5, abs=0.03)


def test_unlabelled_ct_changes_nothing_for_methods_without_a_translator(cohort_with_unlabelled_ct, cohort):
    weights = []
    for data in (cohort, cohort_with_unlabelled_ct):
        trainer = trainer_for(data, method="naive", iterations=3)
        assert trainer.translator_target_sampler is None
        trainer.run()
        weights.append(torch.cat([p.flatten() for p in trainer.predictor.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_regression_and_three_classes(tmp_path):
    manifest = write_phantom_cohort(tmp_path / "reg", n_ct=4, n_source=4, shape=(8, 32, 32), task="regression")
    cohort = build_cohort(read_manifest(manifest), "MR", "CT", "regression", 32, seed=0)
    assert cohort.label_names == [] and cohort.regression_scale[1] > 0
    trainer = trainer_for(cohort, task="regression", iterations=2)
    trainer.run()
    assert np.isfinite(trainer.evaluate()["val"]["volume"]["mae"])

    manifest = write_phantom_cohort(tmp_path / "three", n_ct=6, n_source=6, shape=(8, 32, 32), slice_labels=False)
    lines = manifest.read_text().splitlines()
    relabelled = [lines[0]] + [line.replace(",none,", ",grade2,", 1) if n % 3 == 0 else line
                               for n, line in enumerate(lines[1:])]
    manifest.write_text("\n".join(relabelled) + "\n")
    cohort = build_cohort(read_manifest(manifest), "MR", "CT", "classification", 32, seed=0)
    assert cohort.label_names == ["grade2", "lesion", "none"]
    trainer = trainer_for(cohort, iterations=2)
    trainer.run()
    probabilities = trainer.evaluate()["val"]
    assert probabilities["slice"]["n"] > 0


def test_two_process_resume_gives_each_process_its_own_sampling_back(mr_cohort, tmp_path):
    """Each process draws its own batches; a resumed multi-process run must give each its own generator
    and image pools back (not the main process's), or the processes draw the same batches afterwards."""
    result = run_torchrun(ROOT / "Testing" / "distributed_resume.py", mr_cohort, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("same weights True, same sampling state True") == 2
