"""Interrupted training: the real `duiit train` process is SIGKILLed at random points, again and again, and
resumed with --resume each time. Every resume succeeds, the checkpoint and the bundle at their final paths
are never corrupt, and the final weights equal those of an uninterrupted run bit for bit (CPU, fixed seed).

Kill points: after k checkpoint events plus a random delay (mid-step, mid-checkpoint-write), at a random
time after start (import, cohort loading, checkpoint loading), and once after the last checkpoint, while
the predictor is evaluated and the bundle written. Each process uses one CPU thread: identical arithmetic
in every process (and much faster on a shared CI machine than oversubscribed threads).
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import torch

from conftest import ROOT, TINY, run_cli
from duiit.bundle import load_bundle
from duiit.checkpoint import checkpoint_path, load_checkpoint
from duiit.phantom import write_phantom_cohort
from robustness_tally import tally  # noqa: F401  (a fixture)

KILLS = 11  # the last one aims at the bundle write and may land after it: at least 10 kills
ITERATIONS = 30
SEED = 5
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_args(manifest, out):
    return ["train", "--manifest", str(manifest), "--source", "MR", "--task", "classification", "-o", str(out),
            "--iterations", str(ITERATIONS), "--checkpoint-every", "1", "--seed", str(SEED), "--warmup", "0.2",
            "--device", "cpu", *TINY]


class Run:
    """One `python -m duiit train ... --progress-json` process, its events read as they come."""

    def __init__(self, args, log):
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "duiit", *args, "--progress-json"], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=log, text=True,
                                        env={**os.environ, **ONE_THREAD})
        self.events = []

    def kill_after_checkpoints(self, count, delay, final_only=False):
        """SIGKILL `delay` s after the count-th checkpoint event (or the one of the last iteration)."""
        seen = 0
        for line in self.process.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == "checkpoint":
                seen += 1
                if (final_only and event["iteration"] == ITERATIONS) or (not final_only and seen == count):
                    time.sleep(delay)
                    return self.kill()
        return self.finish()

    def kill_at(self, seconds, at_most_checkpoints=2):
        """SIGKILL `seconds` after start, or at the given checkpoint event if that comes first: on a machine
        whose load changed since the first round's timing, a resumed run might otherwise finish first."""
        timer = threading.Timer(max(seconds - (time.monotonic() - self.started), 0), self.kill)
        timer.start()
        seen = 0
        for line in self.process.stdout:
            event = json.loads(line)
            self.events.append(event)
            seen += event["event"] == "checkpoint"
            if seen == at_most_checkpoints:
                break
        timer.cancel()
        return self.kill()

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.finish()

    def finish(self):
        self.process.stdout.close()
        return self.process.wait(timeout=300)


def weights(bundle_path):
    return load_bundle(bundle_path).tensors


def test_sigkill_at_random_points_then_resume_gives_the_same_weights(tmp_path, tally):
    manifest = write_phantom_cohort(tmp_path / "data", n_ct=4, n_source=2, source="MR", shape=(6, 32, 32))
    out = tmp_path / "run" / "model.duiit"
    out.parent.mkdir()
    ckpt = checkpoint_path(out)
    rng = random.Random(20240611)
    log = open(tmp_path / "stderr.txt", "w")
    kills, modes, steps, checked, resumes = 0, [], [], 0, 0
    first_checkpoint_s, run = None, None
    started = time.monotonic()
    try:
        while kills < KILLS:
            run = Run(train_args(manifest, out) + (["--resume"] if kills else []), log)
            resumes += bool(kills)
            if kills == KILLS - 1:
                mode, code = "bundle", run.kill_after_checkpoints(0, rng.uniform(0.0, 0.3), final_only=True)
            elif kills and rng.random() < 0.3:
                mode, code = "time", run.kill_at(rng.uniform(0.2, 1.1 * first_checkpoint_s))
            else:
                mode, code = "steps", run.kill_after_checkpoints(rng.randint(1, 2), rng.uniform(0.0, 0.3))
            if first_checkpoint_s is None:
                first_checkpoint_s = time.monotonic() - run.started
            assert not any(e["event"] == "error" for e in run.events), run.events
            if mode == "bundle" and code == 0:  # evaluated and written before the kill landed: no kill
                break
            assert code == -signal.SIGKILL, f"round {kills + 1} ({mode}) ended with {code}, not by the kill; " \
                                            f"see {tmp_path / 'stderr.txt'}"
            kills += 1
            modes.append(mode)
            # what is at the final paths is complete: the checkpoint loads, the bundle (if any) loads
            state = load_checkpoint(ckpt, {})
            assert not steps or state["step"] >= steps[-1], "a checkpoint went back in time"
            assert [h["step"] for h in state["history"]] == list(range(1, state["step"] + 1))
            steps.append(state["step"])
            checked += 1
            if out.exists():
                load_bundle(out)
                checked += 1
        run = Run(train_args(manifest, out) + ["--resume"], log)
        resumes += 1
        assert run.kill_after_checkpoints(10 ** 9, 0) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert run.events[-1]["event"] == "done"
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        log.close()
    interrupted_s = time.monotonic() - started

    # the same training without interruption, in this process (one thread, as the workers)
    reference = tmp_path / "reference" / "model.duiit"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_cli(*train_args(manifest, reference))
    finally:
        torch.set_num_threads(threads)
    assert result.returncode == 0, result.stderr

    resumed, straight = weights(out), weights(reference)
    assert resumed.keys() == straight.keys()
    different = [k for k in straight if not torch.equal(resumed[k], straight[k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
    final, expected = load_checkpoint(ckpt, {}), load_checkpoint(checkpoint_path(reference), {})
    assert final["history"] == expected["history"]  # every loss of every step, bit for bit
    for name, module in expected["modules"].items():  # discriminators too, which the bundle does not hold
        assert all(torch.equal(final["modules"][name][k], v) for k, v in module.items()), name
    strays = sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp"))
    assert len(strays) <= kills  # temporary files of writes cut short; never at a final path

    assert kills >= 10
    tally.add("kills survived", kills)
    tally.report("kills", f"survived {kills} SIGKILLs of `duiit train` ({modes.count('steps')} after checkpoints, "
                          f"{modes.count('time')} at random times, {modes.count('bundle')} while the bundle was "
                          f"written; checkpoint steps {steps}); {resumes} resumes succeeded, {checked} checkpoints/"
                          f"bundles at their final paths loaded, final weights bit-identical to an uninterrupted run "
                          f"({len(strays)} stray .tmp files from cut writes; {interrupted_s:.0f} s)")


def test_slice_labels_from_lesion_masks_are_what_the_masks_say(tmp_path, monkeypatch):
    """Found by the resume test: the cohort read slice labels through a numpy view of a temporary
    SimpleITK image, freed before the view was read, so labels were garbage that changed from run to run
    (and a resumed run trained on other labels than the run it continued)."""
    import SimpleITK as sitk
    from duiit import cohort as cohort_module
    from duiit.manifest import read_manifest
    from duiit.slices import to_axial
    manifest = write_phantom_cohort(tmp_path, n_ct=4, n_source=2, source="MR", shape=(6, 32, 32))
    cases = read_manifest(manifest)
    real = [cohort_module.build_cohort(cases, "MR", "CT", "classification", 32, seed=0) for _ in range(3)]
    clutter = [sitk.Image(32, 32, 6, sitk.sitkUInt8) + 7 for _ in range(8)]  # reuses freed buffers
    real.append(cohort_module.build_cohort(cases, "MR", "CT", "classification", 32, seed=0))

    def copied(case, image):  # the same mask from a copy, which cannot be freed under us
        mask = cohort_module.read_volume(case.mask)
        mask.CopyInformation(image)
        return sitk.GetArrayFromImage(to_axial(mask)).copy() > 0

    monkeypatch.setattr(cohort_module, "axial_mask", copied)
    expected = cohort_module.build_cohort(cases, "MR", "CT", "classification", 32, seed=0)
    for cohort in real:
        for name in ("target_train", "target_val", "source_train"):
            assert torch.equal(getattr(cohort, name).labels, getattr(expected, name).labels), name
    assert len(clutter) == 8
