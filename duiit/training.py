"""The training loop: translator G/F, discriminators and predictor C, trained jointly (DUIIT) or as baselines.

Methods (same data, same split, same predictor and predictor budget):
  duiit        joint: C's loss on G(source) reaches G (weight ramped in after a warm-up), C trains on
               real + G(source); `guidance=False` is the ablation where G(source) is detached. With the
               target guide and guide_pretrain > 0, a "guide" phase first trains that guide on real target.
  cyclegan     two-stage: CycleGAN without a predictor, then a fresh C on real + translated source.
  naive        C on real target + untranslated (normalised) source.
  target-only  C on real target only.
"""

import math
import signal
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from .augmentation import augment_predictor_batch
from .checkpoint import load_checkpoint, save_checkpoint
from .cohort import BACKGROUND_LABEL, Cohort, SliceSet
from .device import autocast
from .distributed import DistributedContext, any_rank, gather_to_main, unwrap, wrap
from .erased_lesions import erase_lesions
from .errors import DuiitError
from .head_depth import head_depth
from .image_pool import ImagePool
from .lesion_inversion import inverted_lesion_slices
from .losses import gan_loss, task_loss
from .networks import (CycleTranslator, Discriminators, NetworkConfig, SlicePredictor, init_weights,
                       predictor_outputs)
from .prediction import evaluate
from .structure import structure_loss
from .training_options import (METHODS, TRANSLATING_METHODS, TrainingOptions, check_guide_options,
                               guide_class_names)


class Cancelled(Exception):
    """Training stopped by a signal after writing a checkpoint."""

    def __init__(self, checkpoint):
        super().__init__(f"training cancelled; checkpoint saved at {checkpoint}")
        self.checkpoint = checkpoint


def phases(method: str, iterations: int, guide_pretrain: int = 0) -> list:
    if method == "duiit":
        return ([("guide", guide_pretrain)] if guide_pretrain > 0 else []) + [("joint", iterations)]
    if method == "cyclegan":
        return [("translator", iterations), ("predictor", iterations)]
    if method in ("naive", "target-only"):
        return [("predictor", iterations)]
    raise DuiitError(f"method {method!r} is not one of {', '.join(METHODS)}")


def task_weight(options: TrainingOptions, iteration: int, total: int) -> float:
    """0 during warm-up, then a linear ramp to lambda_task, so an untrained C does not steer G."""
    if not options.guidance:
        return 0.0
    start, ramp = options.warmup * total, max(options.ramp * total, 1.0)
    return options.lambda_task * min(max((iteration - start) / ramp, 0.0), 1.0)


def guide_labels(options: TrainingOptions, label_names: list):
    """Label indices of options.guide_classes (None: every class guides G)."""
    names = guide_class_names(options.guide_classes)
    if not names:
        return None
    unknown = [n for n in names if n not in label_names]
    if unknown:
        raise DuiitError(f"guide class {unknown[0]!r} is not a label of this cohort ({', '.join(label_names)})")
    return torch.tensor([label_names.index(n) for n in names])


def learning_rate_factor(iteration: int, total: int) -> float:
    """CycleGAN schedule: constant for the first half, then linear decay towards zero."""
    half = total / 2
    return 1.0 if iteration <= half else max(0.0, 1.0 - (iteration - half) / (half + 1))


def balancing_weights(slices: SliceSet) -> torch.Tensor:
    """Per-class loss weights for uniform draws from `slices`: weight x loss then has the expectation of the
    class-balanced mean (each present class counts 1/K), as if the draws had been class-balanced."""
    counts = torch.bincount(slices.labels).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(slices) / (present * counts.clamp(min=1.0)), torch.zeros_like(counts))


def moving_average(decay: float):
    """AveragedModel's update for an exponential moving average whose decay is 1 - 1/n over the first n updates
    (until it reaches `decay`): the plain mean of the weights so far until the window is full, so a run
    shorter than the window is not dominated by its first weights."""
    def update(averaged: list, current: list, updates_before):
        weight_of_past = min(decay, 1.0 - 1.0 / (float(updates_before) + 1.0))
        for average, value in zip(averaged, current):
            average.lerp_(value, 1.0 - weight_of_past)
    return update


class BatchSampler:
    """Random batches from a slice set with an explicit RNG; class-balanced if `balanced` (classification)."""

    def __init__(self, slices: SliceSet, balanced: bool, generator: torch.Generator):
        self.slices = slices
        self.generator = generator
        self.weights = torch.ones(len(slices))
        if balanced and len(slices):
            counts = torch.bincount(slices.labels)
            self.weights = 1.0 / counts[slices.labels].float()

    def sample(self, batch_size: int, device):
        return self.take(self.draw(batch_size), device)

    def draw(self, batch_size: int) -> torch.Tensor:
        """The indices of a batch (what `sample` takes)."""
        return torch.multinomial(self.weights, batch_size, replacement=True, generator=self.generator)

    def take(self, index: torch.Tensor, device):
        return (self.slices.images[index].to(device, torch.float32, non_blocking=True),
                self.slices.labels[index].to(device, non_blocking=True))


class StopRequest:
    """SIGINT/SIGTERM ask for a stop at the next step boundary (so a checkpoint is consistent);
    a second signal interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        # SIGBREAK: what a cancel (CTRL_BREAK_EVENT) delivers on Windows
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)):
            if sig is None:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cohort: Cohort, options: TrainingOptions, network: NetworkConfig, device: torch.device,
                 context: DistributedContext = None, progress=None, checkpoint_path=None):
        self.cohort, self.options, self.network, self.device = cohort, options, network, device
        self.context = context or DistributedContext()
        self.progress = progress
        self.checkpoint_path = checkpoint_path
        self.phases = phases(options.method, options.iterations, options.guide_pretrain)
        self.total_steps = sum(n for _, n in self.phases)
        self.step = 0
        self.history = []  # one dict of losses per step (main process)
        self.regression_scale = cohort.regression_scale

        torch.manual_seed(options.seed)
        init = torch.Generator().manual_seed(options.seed)
        outputs = predictor_outputs(options.task, len(cohort.label_names))
        self.translator = CycleTranslator(network) if self.uses_translator else None
        self.discriminators = Discriminators(network) if self.uses_translator else None
        self.predictor = SlicePredictor(network, outputs)
        check_guide_options(options)
        guided = options.method == "duiit" and options.guide_predictor == "target"
        self.guide_predictor = SlicePredictor(network, outputs) if guided else None
        for module in self.modules().values():
            init_weights(module, init)
            module.to(device)
        self.optimizers = {}
        betas = (options.beta1, 0.999)
        if self.uses_translator:
            self.optimizers["translator"] = torch.optim.Adam(self.translator.parameters(), options.lr, betas=betas)
            self.optimizers["discriminators"] = torch.optim.Adam(self.discriminators.parameters(), options.lr,
                                                                 betas=betas)
        self.optimizers["predictor"] = torch.optim.Adam(self.predictor.parameters(), options.lr, betas=betas)
        if guided:
            self.optimizers["guide_predictor"] = torch.optim.Adam(self.guide_predictor.parameters(), options.lr,
                                                                  betas=betas)
        # A GAN's generator swings from step to step; an exponential moving average of its weights (made after
        # the initialisation, so it draws no random numbers) is steadier, and is what translates for the bundle.
        self.translator_average = None
        if self.uses_translator and options.translator_ema > 0:
            self.translator_average = AveragedModel(self.translator,
                                                    multi_avg_fn=moving_average(options.translator_ema))
        # Each process draws its own batches; the seed makes a run (and its resume) reproducible.
        self.rng = torch.Generator().manual_seed(options.seed * 1000 + self.context.rank + 1)
        self.balanced = options.task == "classification"
        self.target_sampler = BatchSampler(cohort.target_train, self.balanced, self.rng)
        self.source_sampler = BatchSampler(cohort.source_train, self.balanced, self.rng)
        # Unlabelled target images teach the translator the target modality; without them it sees the labelled
        # batch (and draws nothing more, so such runs are unchanged).
        self.translator_target_sampler = None
        self.translator_source_sampler = self.source_sampler
        self.source_class_weights = None
        if self.uses_translator and cohort.has_unlabelled_target:
            self.translator_target_sampler = BatchSampler(cohort.translator_target, False, self.rng)
            # Unlabelled target images come at their natural class frequency, so the source images the GAN
            # matches them with do too (class-balanced source against uniform target gave a higher paired MAE:
            # benchmark runs 65/72 against 80/81); C's losses on those slices are weighted back to balance.
            self.translator_source_sampler = BatchSampler(cohort.source_train, False, self.rng)
            if self.balanced:
                self.source_class_weights = balancing_weights(cohort.source_train).to(device)
        # drawn only with the option, so that other runs draw the same batches as before it existed
        self.inverted_sampler = None
        if options.guide_inverted_lesions:
            inverted = inverted_lesion_slices(cohort.target_train.cases, network.image_size, cohort.label_names)
            self.inverted_sampler = BatchSampler(inverted, False, self.rng)
        self.pools = {"target": ImagePool(options.pool_size, self.rng), "source": ImagePool(options.pool_size, self.rng)}
        self.translated_source = None  # cyclegan's second stage: G(source), computed once
        self.guide_labels = guide_labels(options, cohort.label_names)
        if options.guide_erased_lesions:
            self._check_source_lesions()
        self._wrapped = {}

    def modules(self) -> dict:
        """The networks this method trains, by name (in a fixed order: their initialisation draws in turn)."""
        named = {n: getattr(self, n) for n in ("translator", "discriminators", "predictor", "guide_predictor")}
        return {n: m for n, m in named.items() if m is not None}

    def deployed_translator(self):
        """The translator a bundle keeps and cyclegan's second stage uses: G/F, or their moving average."""
        if self.translator_average is not None:
            return self.translator_average.module
        return unwrap(self.translator)

    @property
    def uses_translator(self) -> bool:
        return self.options.method in TRANSLATING_METHODS

    def _ddp(self, name: str):
        """The module for a step that trains it: DDP-wrapped when distributed."""
        if name not in self._wrapped:
            self._wrapped[name] = wrap(getattr(self, name), self.context, self.device)
        return self._wrapped[name]

    # -- one step of each kind -------------------------------------------------------------------

    def generator_loss(self, source, target, source_labels, weight: float, source_weights=None, erased=None):
        """G/F loss; with weight > 0 it includes C's task loss on G(source), whose gradient reaches G
        (per slice weighted by source_weights if given), and on G(erased) as background if given
        ((erased source slices, their weights or None)); G(erased) is then out["fake_erased"]."""
        o = self.options
        n = source.shape[0]
        with autocast(self.device):
            # the erased slices go through G in the same call (DDP expects one forward per backward); G's
            # instance norm treats each slice alone, so they change nothing for the others
            inputs = source if erased is None else torch.cat([source, erased[0]])
            out = self._ddp("translator")(inputs, target, identity=o.lambda_identity > 0)
            if erased is not None:
                out["fake_erased"] = out["fake_target"][n:]
            for key in ("fake_target", "rec_source", "idt_source"):
                if key in out:
                    out[key] = out[key][:n]
            out["depth_of_source"], out["depth_of_target"] = self.input_depths(source, target)
            scores_target = self.discriminators.target(out["fake_target"], out["depth_of_source"])
            scores_source = self.discriminators.source(out["fake_source"], out["depth_of_target"])
            parts = {"gan": gan_loss(scores_target, True) + gan_loss(scores_source, True),
                     "cycle": F.l1_loss(out["rec_source"].float(), source) + F.l1_loss(out["rec_target"].float(), target)}
            total = parts["gan"] + o.lambda_cycle * parts["cycle"]
            if o.lambda_identity > 0:
                parts["identity"] = (F.l1_loss(out["idt_target"].float(), target)
                                     + F.l1_loss(out["idt_source"].float(), source))
                total = total + o.lambda_cycle * o.lambda_identity * parts["identity"]
            if o.lambda_structure > 0:
                parts["structure"] = (structure_loss(source, out["fake_target"])
                                      + structure_loss(target, out["fake_source"]))
                total = total + o.lambda_structure * parts["structure"]
            if weight > 0:
                fake_erased = None if erased is None else (out["fake_erased"], erased[1])
                parts["task_g"] = self.guidance_loss(out["fake_target"], source_labels, source_weights, fake_erased)
                total = total + weight * parts["task_g"]
        return total, parts, out

    def input_depths(self, source, target):
        """With depth_from_input, the head depth maps of the images being translated: D judges each translation
        by the outline of the image it came from, so a scalp drawn as air shows as air inside the head (its own
        outline would have shrunk with it). None, None: each image's own."""
        rings = self.network.discriminator_head_depth
        if not (self.options.depth_from_input and rings):
            return None, None
        return head_depth(source, rings), head_depth(target, rings)

    def guidance_loss(self, fake_target, source_labels, source_weights=None, erased=None):
        """C's task loss on G(source) for G: on the slices of the guiding classes only, if they are chosen;
        `erased`: (G of guided lesion slices with the lesion erased, their weights or None), as background."""
        if self.guide_labels is not None:
            chosen = self._guided(source_labels)
            if not chosen.any():
                return fake_target.float().sum().abs() * 0.0  # keeps the graph (DDP), no push on G, prints as 0
            fake_target, source_labels = fake_target[chosen], source_labels[chosen]
            source_weights = None if source_weights is None else source_weights[chosen]
        if erased is not None:
            fake_erased, erased_weights = erased
            fake_target, source_labels, source_weights = self._with_background(
                fake_target, source_labels, source_weights, fake_erased, erased_weights)
        guide = self.predictor if self.guide_predictor is None else self.guide_predictor
        return task_loss(guide(fake_target), source_labels, self.options.task, self.options.task_floor,
                         source_weights)

    def _with_background(self, images, labels, weights, background_images, background_weights):
        """images, labels and weights (or None) with background_images appended as background slices."""
        background = torch.full((len(background_images),), self.cohort.label_names.index(BACKGROUND_LABEL),
                                dtype=labels.dtype, device=labels.device)
        weights = None if weights is None else torch.cat([weights, background_weights])
        return torch.cat([images, background_images]), torch.cat([labels, background]), weights

    def _guided(self, labels):
        """Which slices of a batch steer G (every slice when no guiding classes are chosen)."""
        if self.guide_labels is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return torch.isin(labels, self.guide_labels.to(labels.device))

    def _check_source_lesions(self):
        lesions = self.cohort.source_train.lesions
        if lesions is None or not lesions.flatten(1).any(dim=1)[self._guided(self.cohort.source_train.labels)].any():
            raise DuiitError("--guide-erased-lesions erases the lesions of the guided source slices, and no source "
                             "training case has a lesion mask that marks one on a guided slice: give the "
                             f"{self.options.source} cases lesion masks (the manifest's mask column)")

    def erased_sources(self, source, source_labels, index, source_weights):
        """(the batch's guided lesion slices with the lesion erased, their weights or None), or None if it has
        none: the counterfactual the guide judges as background (duiit.erased_lesions)."""
        lesions = self.cohort.source_train.lesions[index].to(source.device)
        with_lesion = lesions.flatten(1).any(dim=1) & self._guided(source_labels)
        if not with_lesion.any():
            return None
        weights = None if source_weights is None else source_weights[with_lesion]
        return erase_lesions(source[with_lesion], lesions[with_lesion]), weights

    def joint_step(self, iteration: int, phase_length: int, with_predictor: bool) -> dict:
        o = self.options
        target, target_labels = self.target_sampler.sample(o.batch_size, self.device)
        index = self.translator_source_sampler.draw(o.batch_size)
        source, source_labels = self.translator_source_sampler.take(index, self.device)
        source_weights = None if self.source_class_weights is None else self.source_class_weights[source_labels]
        weight = task_weight(o, iteration, phase_length) if with_predictor else 0.0
        erased = None
        if o.guide_erased_lesions and weight > 0:
            erased = self.erased_sources(source, source_labels, index, source_weights)
        source_labels = self._standardise(source_labels)
        target_labels = self._standardise(target_labels)
        real_target = target
        if self.translator_target_sampler is not None:
            real_target = self.translator_target_sampler.sample(o.batch_size, self.device)[0]

        steered_by = (self.discriminators, self.predictor, self.guide_predictor)
        for module in steered_by:
            self._set_trainable(module, False)
        total, parts, out = self.generator_loss(source, real_target, source_labels, weight, source_weights, erased)
        self._update("translator", total)
        if self.translator_average is not None:
            self.translator_average.update_parameters(self.translator)
        for module in steered_by:
            self._set_trainable(module, True)

        losses = {k: v.item() for k, v in parts.items()}
        losses["task_weight"] = weight
        if with_predictor:
            extra, extra_labels, extra_weights = out["fake_target"].detach(), source_labels, source_weights
            if o.predictor_erased_lesions and erased is not None:
                extra, extra_labels, extra_weights = self._with_background(
                    extra, extra_labels, extra_weights, out["fake_erased"].detach(), erased[1])
            losses.update(self.predictor_step(target, target_labels, extra, extra_labels, extra_weights))
            if self.guide_predictor is not None:
                losses["guide_task_real"] = self.guide_step(target, target_labels)

        fake_target, fake_target_depth = self._pooled("target", out["fake_target"], out["depth_of_source"])
        fake_source, fake_source_depth = self._pooled("source", out["fake_source"], out["depth_of_target"])
        n = real_target.shape[0]
        with autocast(self.device):  # real and fake in one call: DDP expects one forward per backward
            scores_target, scores_source = self._ddp("discriminators")(
                torch.cat([real_target, fake_target]), torch.cat([source, fake_source]),
                self._beside_own_depth(real_target, fake_target_depth),
                self._beside_own_depth(source, fake_source_depth))
            loss_d = 0.5 * (gan_loss(scores_target[:n], True) + gan_loss(scores_target[n:], False)
                            + gan_loss(scores_source[:n], True) + gan_loss(scores_source[n:], False))
        self._update("discriminators", loss_d)
        losses["discriminators"] = loss_d.item()
        return losses

    def _pooled(self, name: str, fakes, depth):
        """Fakes from the image pool, with the depth maps they are judged by (pooled with them) if given."""
        fakes = fakes.detach().float()
        if depth is None:
            return self.pools[name].query(fakes), None
        pooled = self.pools[name].query(torch.cat([fakes, depth.float()], 1))
        return pooled[:, :1], pooled[:, 1:]

    def _beside_own_depth(self, reals, fake_depth):
        """Real images are judged by their own depth maps, the fakes after them by theirs."""
        if fake_depth is None:
            return None
        return torch.cat([head_depth(reals, self.network.discriminator_head_depth), fake_depth.to(reals.dtype)])

    def predictor_step(self, target, target_labels, extra=None, extra_labels=None, extra_weights=None,
                       name="predictor", extra_scale=None) -> dict:
        """C's loss: real target, plus b times the (translated or untranslated) source if given (per slice
        weighted by extra_weights if given; `extra_scale` in place of b for extras that are not source)."""
        o = self.options
        getattr(self, name).train()
        images = target if extra is None else torch.cat([target, extra])
        if o.predictor_augment:
            images = augment_predictor_batch(images, self.rng)
        with autocast(self.device):
            outputs = self._ddp(name)(images)
            n = target.shape[0]
            loss_real = task_loss(outputs[:n], target_labels, o.task)
            loss = loss_real
            losses = {"task_real": loss_real.item()}
            if extra is not None:
                loss_source = task_loss(outputs[n:], extra_labels, o.task, weights=extra_weights)
                loss = loss + (o.source_weight if extra_scale is None else extra_scale) * loss_source
                losses["task_source"] = loss_source.item()
        self._update(name, loss)
        return losses

    def predictor_only_step(self) -> dict:
        o = self.options
        target, target_labels = self.target_sampler.sample(o.batch_size, self.device)
        extra = extra_labels = None
        if o.method == "naive":
            extra, extra_labels = self.source_sampler.sample(o.batch_size, self.device)
        elif o.method == "cyclegan":
            extra, extra_labels = self.translated_sampler.sample(o.batch_size, self.device)
        return self.predictor_step(target, self._standardise(target_labels), extra,
                                   None if extra_labels is None else self._standardise(extra_labels))

    def guide_only_step(self) -> dict:
        """The target guide learns the task on real target before it steers G (an untrained guide pushes G
        towards whatever it happens to score, not towards what marks the class in real images)."""
        target, target_labels = self.target_sampler.sample(self.options.batch_size, self.device)
        return {"guide_task_real": self.guide_step(target, self._standardise(target_labels))}

    def guide_step(self, target, target_labels) -> float:
        """One update of the target guide on a real target batch; with inverted lesions, half a batch of
        them more, labelled background. Returns its loss on the real batch."""
        if self.inverted_sampler is None:
            return self.predictor_step(target, target_labels, name="guide_predictor")["task_real"]
        inverted, inverted_labels = self.inverted_sampler.sample(max(1, self.options.batch_size // 2), self.device)
        return self.predictor_step(target, target_labels, inverted, inverted_labels, name="guide_predictor",
                                   extra_scale=1.0)["task_real"]

    # -- helpers -----------------------------------------------------------------------------------

    def _standardise(self, labels):
        if self.options.task != "regression":
            return labels
        mean, std = self.regression_scale
        return (labels - mean) / std

    @staticmethod
    def _set_trainable(module, flag: bool):
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(flag)

    def _update(self, name: str, loss):
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _set_learning_rate(self, iteration: int, total: int):
        factor = learning_rate_factor(iteration, total)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = self.options.lr * factor

    @torch.inference_mode()
    def translate_source(self) -> SliceSet:
        """G(source) for the whole source training set (cyclegan's second stage)."""
        translator = self.deployed_translator().eval()
        images = []
        for start in range(0, len(self.cohort.source_train), 64):
            batch = self.cohort.source_train.images[start:start + 64].to(self.device, torch.float32)
            with autocast(self.device):
                images.append(translator.to_target(batch).float().to(torch.float16).cpu())
        translator.train()
        source = self.cohort.source_train
        return SliceSet(torch.cat(images) if images else source.images, source.labels, source.case_index,
                        source.cases)

    # -- the loop, checkpoints and resume ------------------------------------------------------------

    def run(self, resume: bool = False) -> None:
        if resume:
            self.load_state(load_checkpoint(self.checkpoint_path, self.options.fingerprint(),
                                             TrainingOptions().fingerprint()))
        done_before = 0
        with StopRequest() as stop:
            for phase, length in self.phases:
                if self.step >= done_before + length:
                    done_before += length
                    continue
                if phase == "predictor" and self.options.method == "cyclegan":
                    self.translated_sampler = BatchSampler(self.translate_source(), self.balanced, self.rng)
                for module in self.modules().values():
                    module.train()
                while self.step < done_before + length:
                    iteration = self.step - done_before + 1
                    self._set_learning_rate(iteration, length)
                    if phase == "predictor":
                        losses = self.predictor_only_step()
                    elif phase == "guide":
                        losses = self.guide_only_step()
                    else:
                        losses = self.joint_step(iteration, length, with_predictor=phase == "joint")
                    self.step += 1
                    self.history.append({"step": self.step, "phase": phase, **losses})
                    if not all(math.isfinite(v) for v in losses.values()):
                        raise DuiitError(f"training diverged at step {self.step} (loss is not finite: {losses}); "
                                         "try a lower learning rate")
                    if self.progress and self.context.is_main:
                        self.progress.step(phase, iteration, length, done_before, self.total_steps, losses)
                    stopping = any_rank(stop.requested, self.context, self.device)
                    if stopping or self.step % self.options.checkpoint_every == 0 or self.step == self.total_steps:
                        self.save()
                    if stopping:
                        raise Cancelled(self.checkpoint_path)
                done_before += length

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        ranks = gather_to_main(self.sampling_state(), self.context)  # every rank takes part
        if not self.context.is_main:
            return
        save_checkpoint(self.checkpoint_path, {**self.state(), "ranks": ranks})
        if self.progress:
            self.progress.event("checkpoint", path=str(self.checkpoint_path), iteration=self.step)

    def sampling_state(self) -> dict:
        """What differs between the processes of a multi-process run: each draws its own batches."""
        return {"rng": self.rng.get_state(), "pools": {k: p.state() for k, p in self.pools.items()}}

    def state(self) -> dict:
        """Everything but the sampling state, which `save` gathers from every process."""
        modules = {n: unwrap(m).state_dict() for n, m in self.modules().items()}
        if self.translator_average is not None:
            modules["translator_average"] = self.translator_average.state_dict()
        return {"options": self.options.fingerprint(), "network": self.network.to_dict(), "step": self.step,
                "modules": modules, "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "history": self.history, "time": time.time()}

    def load_state(self, state: dict) -> None:
        if state["network"] != self.network.to_dict():
            raise DuiitError(f"{self.checkpoint_path}: made with another network configuration; resume with the "
                             "same --preset/--image-size/--head-depth or start afresh")
        for name, values in state["modules"].items():
            unwrap(getattr(self, name)).load_state_dict(values)
        if self.translator_average is not None and "translator_average" not in state["modules"]:
            self.translator_average.update_parameters(self.translator)  # older checkpoint: start from its weights
        for name, values in state["optimizers"].items():
            self.optimizers[name].load_state_dict(values)
        # each process resumes its own sampling; a process the checkpoint has none for (an earlier
        # checkpoint, or more processes now) keeps its fresh rank-seeded generator and an empty pool
        ranks = state["ranks"] if "ranks" in state else [{"rng": state["rng"], "pools": state["pools"]}]
        if self.context.rank < len(ranks):
            own = ranks[self.context.rank]
            self.rng.set_state(own["rng"])
            for name, values in own["pools"].items():
                self.pools[name].load(values, self.device)
        self.history = list(state["history"])
        self.step = int(state["step"])

    def evaluate(self) -> dict:
        """Predictor metrics on real target images only (validation and test splits)."""
        predictor = unwrap(self.predictor)
        results = {}
        for name in ("val", "test"):
            metrics = evaluate(predictor, getattr(self.cohort, f"target_{name}"), self.options.task,
                               self.cohort.label_names, self.regression_scale, self.device)
            if metrics:
                results[name] = metrics
        return results
