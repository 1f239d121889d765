"""The options of one training run: method, budget, loss weights, MR normalisation, seed. Its own module,
free of torch, so that the command line and the benchmarks read the defaults from one place."""

from dataclasses import asdict, dataclass

from .errors import DuiitError
from .normalisation import MR_CONTRAST_JITTER

# "joint": C, trained on real target and G(source), steers G (the paper). "target": a second C trained on
# real target images only steers G; it cannot learn a code that G invents for C on G(source), so G is steered
# towards what real target images show (C is still trained on both and is the one the bundle keeps).
GUIDE_PREDICTORS = ("joint", "target")

METHODS = ("duiit", "cyclegan", "naive", "target-only")
TASKS = ("classification", "regression")
SOURCE_MODALITIES = ("MR", "PT")
TARGET_MODALITIES = ("CT",)
TRANSLATING_METHODS = ("duiit", "cyclegan")  # they train a translator, which learns from unlabelled target too


@dataclass
class TrainingOptions:
    method: str = "duiit"
    task: str = "classification"
    source: str = "MR"
    target: str = "CT"
    iterations: int = 2000
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5     # times lambda_cycle, as in CycleGAN
    lambda_task: float = 1.0         # weight of C's loss on G(source) in G's loss
    lambda_structure: float = 0.0    # > 0: MIND structure consistency of G and F (structure.structure_loss)
    translator_ema: float = 0.99     # > 0: the bundle keeps a moving average of G/F's weights with this decay
    source_weight: float = 1.0       # b: weight of C's loss on (translated) source in C's loss
    warmup: float = 0.2              # fraction of the joint phase before guidance starts
    ramp: float = 0.2                # fraction over which the task weight rises to lambda_task
    guidance: bool = True            # False: ablation, G(source) detached before C (authors' code)
    task_floor: float = 0.0          # > 0: G's task loss per slice counts only above this (losses.task_loss)
    guide_classes: str = ""          # classification: comma-separated classes whose slices steer G ("": all)
    guide_predictor: str = "joint"   # which C steers G: the joint one, or one trained on real target only
    guide_pretrain: int = 0          # steps the target-only guide trains alone before the joint phase
    guide_inverted_lesions: bool = False  # the target guide also learns its lesions drawn inverted, as background
    guide_erased_lesions: bool = False    # G's guide also judges each guided source lesion slice, erased, as background
    predictor_erased_lesions: bool = False  # with it: C also learns those erased translations as background
    predictor_augment: bool = False  # C's (and the guide's) training slices mirrored and shifted at random
    mr_standard: bool = True         # MR histograms mapped onto the training volumes' (normalisation)
    mr_contrast_jitter: float = MR_CONTRAST_JITTER  # each training MR onto the standard bent by its own gamma
    depth_from_input: bool = False   # D judges G(MR) with the MR's head depth map, F(CT) with the CT's
    pool_size: int = 50
    checkpoint_every: int = 100
    seed: int = 0

    def fingerprint(self) -> dict:
        """Options that must match to resume (checkpoint frequency may change)."""
        values = asdict(self)
        values.pop("checkpoint_every")
        return values


def guide_class_names(guide_classes: str) -> list:
    """The classes of a comma-separated --guide-classes ([]: every class guides G)."""
    return [name.strip() for name in guide_classes.split(",") if name.strip()]


def check_guide_options(options: TrainingOptions) -> None:
    """The guide settings that cannot work together, refused before any data is read (the command line and
    DUIIT Train check them too, so that a bad combination fails at once, not after minutes of loading)."""
    if options.guide_predictor not in GUIDE_PREDICTORS:
        raise DuiitError(f"guide predictor {options.guide_predictor!r}: use one of {', '.join(GUIDE_PREDICTORS)}")
    if guide_class_names(options.guide_classes) and options.task != "classification":
        raise DuiitError(f"guide classes ({options.guide_classes}) apply to classification, not {options.task}")
    steps = options.guide_pretrain
    if steps < 0:
        raise DuiitError(f"--guide-pretrain {steps}: must be 0 (off) or more steps")
    # Only a guide of its own can learn ahead: the joint C must not train on real target alone for longer.
    if steps and (options.method, options.guide_predictor) != ("duiit", "target"):
        raise DuiitError(f"--guide-pretrain {steps} trains the target guide: it needs method duiit with "
                         f"--guide-predictor target, not {options.method} with the {options.guide_predictor} guide")
    # The erased counterfactual is a background slice for the guide of a classification (duiit.erased_lesions).
    if options.guide_erased_lesions and (options.method, options.task) != ("duiit", "classification"):
        raise DuiitError("--guide-erased-lesions shows DUIIT's guide source lesions erased, as background: it needs "
                         f"method duiit and a classification task, not {options.method} ({options.task})")
    # C learns the erased translations the guide's counterfactual makes; without it none are made.
    if options.predictor_erased_lesions and not options.guide_erased_lesions:
        raise DuiitError("--predictor-erased-lesions trains the predictor on the translations that "
                         "--guide-erased-lesions makes: give both")
    # Inverted lesions teach the target guide the lesions' sign; no other predictor trains on them.
    if options.guide_inverted_lesions and (options.method, options.guide_predictor, options.task) != (
            "duiit", "target", "classification"):
        raise DuiitError("--guide-inverted-lesions teaches the target guide: it needs method duiit with "
                         f"--guide-predictor target and a classification task, not {options.method} with the "
                         f"{options.guide_predictor} guide ({options.task})")
