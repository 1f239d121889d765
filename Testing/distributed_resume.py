"""Run by test_training under torchrun (2 processes, gloo): a run killed after its checkpoint and resumed
ends with the straight run's weights and each process's own sampling state. Exit status 0 when it does."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from duiit.cohort import build_cohort
from duiit.distributed import finish, init_distributed
from duiit.manifest import read_manifest
from duiit.networks import NetworkConfig
from duiit.training import Trainer, TrainingOptions

NETWORK = NetworkConfig(image_size=32, generator_width=8, generator_blocks=1, discriminator_width=8,
                        discriminator_layers=2, predictor_width=8, predictor_depth=2)


def main(manifest: Path, work: Path) -> int:
    device = torch.device("cpu")
    context = init_distributed(device)
    cohort = build_cohort(read_manifest(manifest), "MR", "CT", "classification", NETWORK.image_size, seed=0)

    def trainer(folder: str) -> Trainer:
        (work / folder).mkdir(exist_ok=True)
        options = TrainingOptions(iterations=6, batch_size=2, warmup=0.0, ramp=0.0, checkpoint_every=3, seed=3)
        return Trainer(cohort, options, NETWORK, device, checkpoint_path=work / folder / "m.duiit.ckpt",
                       context=context)

    straight = trainer("straight")
    straight.run()
    killed = trainer("killed")
    original_step, calls = killed.joint_step, []

    def joint_step_then_die(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt  # on every process, between checkpoints: step 3 is on disk
        calls.append(1)
        return original_step(*args, **kwargs)

    killed.joint_step = joint_step_then_die
    try:
        killed.run()
    except KeyboardInterrupt:
        pass
    dist.barrier()  # the checkpoint is written before any process reads it
    resumed = trainer("killed")
    resumed.run(resume=True)
    weights = all(torch.equal(a[key], b[key])
                  for a, b in zip(straight.state()["modules"].values(), resumed.state()["modules"].values())
                  for key in a)
    sampling = torch.equal(straight.rng.get_state(), resumed.rng.get_state())
    print(f"rank {context.rank}: same weights {weights}, same sampling state {sampling}", flush=True)
    finish(context)
    return 0 if weights and sampling else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
