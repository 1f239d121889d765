"""Small generated data for the modules' self-tests (Reload & Test in Slicer) and the headless tests.

Nothing here is downloaded: volumes are duiit's synthetic head phantoms, and the bundle is trained for a
few iterations by the real worker process (`python -m duiit train`), so it exercises the real code path.
"""

from __future__ import annotations

from pathlib import Path

TINY_TRAINING = ["--preset", "small", "--image-size", "32", "--generator-width", "8", "--generator-blocks", "1",
                 "--iterations", "4", "--batch-size", "2", "--seed", "0"]


def write_tiny_cohort(folder, source: str = "MR", task: str = "classification") -> Path:
    """Two CT and two source phantoms of 6 x 32 x 32 voxels with a manifest; returns the manifest path."""
    from duiit.phantom import write_phantom_cohort
    return write_phantom_cohort(Path(folder), n_ct=2, n_source=2, source=source, shape=(6, 32, 32), task=task)


def tiny_train_arguments(manifest, output, source: str = "MR", task: str = "classification",
                         extra: list | None = None) -> list:
    return ["--manifest", str(manifest), "--source", source, "--target", "CT", "--task", task,
            "--method", "duiit", "-o", str(output), "--device", "cpu", *TINY_TRAINING, *(extra or [])]


def train_tiny_bundle(folder, source: str = "MR", task: str = "classification", timeout: float = 300) -> Path:
    """Train a 4-iteration bundle in `folder` with the worker process; returns the bundle's path."""
    from DUIITTrainLib.worker import TrainingWorker
    folder = Path(folder)
    manifest = write_tiny_cohort(folder / "data", source, task)
    output = folder / "tiny.duiit"
    worker = TrainingWorker()
    worker.start(tiny_train_arguments(manifest, output, source, task))
    code = worker.wait(timeout)
    events = worker.poll()
    if code != 0 or not output.is_file():
        errors = [e.get("message") for e in events if e.get("event") in ("error", "log")]
        raise RuntimeError(f"training the test bundle failed (exit code {code}): {errors[-5:]}")
    return output


def add_phantom_volume(modality: str = "MR", name: str | None = None, shape=(8, 40, 36), lesion: bool = True,
                       oblique: bool = True):
    """A phantom volume node with anisotropic spacing and (when oblique) a rotated, non-identity direction."""
    import numpy as np
    from duiit import mrml
    from duiit.phantom import head_phantom
    image, _ = head_phantom(shape, modality, lesion=lesion, seed=3, spacing=(0.9, 1.1, 2.5))
    if oblique:
        angle = np.deg2rad(12.0)
        c, s = np.cos(angle), np.sin(angle)
        image.SetDirection([c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0])
        image.SetOrigin((12.5, -30.25, 7.75))
    return mrml.volume_node_from_image(image, name=name or f"phantom {modality}")
