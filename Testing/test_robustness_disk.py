"""A full disk during checkpoint, bundle, export and translate: a clear one-line error (exit code 2) and the
earlier outputs intact, byte for byte, with no temporary files left behind.

Two ways to fill a disk: a 16 MB tmpfs filled up to the last few kilobytes (needs root and Linux; skipped
with the reason otherwise), and a per-process file size limit (RLIMIT_FSIZE, SIGXFSZ ignored; any user on
POSIX), under which writes fail with EFBIG instead of ENOSPC.
"""

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import TINY, run_cli
from robustness_tally import one_thread, tally  # noqa: F401  (tally is a fixture)

LEFT_BYTES = 8 * 1024  # what a "full" tmpfs still takes: less than any output here needs
LARGEST_FILE = 1024  # the file size limit: smaller than any file here, one DICOM slice included


class TmpfsDisk:
    kind = "tmpfs"

    def __init__(self, folder):
        self.folder = folder

    @contextlib.contextmanager
    def full(self):
        stats = os.statvfs(self.folder)
        filler = self.folder / ".filler"
        with open(filler, "wb") as handle:
            handle.truncate(0)
            remaining = stats.f_bavail * stats.f_frsize - LEFT_BYTES
            block = b"\0" * (1 << 20)
            while remaining > 0:
                remaining -= handle.write(block[:remaining])
        try:
            yield
        finally:
            filler.unlink()


class FileSizeLimit:
    kind = "rlimit"

    def __init__(self, folder):
        self.folder = folder

    @contextlib.contextmanager
    def full(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LARGEST_FILE, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)


@pytest.fixture(params=["tmpfs", "rlimit"])
def disk(request, tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "rlimit":
        if not hasattr(resource, "RLIMIT_FSIZE") or not hasattr(signal, "SIGXFSZ"):
            pytest.skip("no RLIMIT_FSIZE on this system")
        yield FileSizeLimit(folder)
        return
    if not sys.platform.startswith("linux") or not shutil.which("mount"):
        pytest.skip("a tmpfs needs Linux and mount; the rlimit variant covers full disks here")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'}); "
                    "the rlimit variant covers full disks")
    try:
        yield TmpfsDisk(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".filler"}


def assert_fails_cleanly(result, disk, *words):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    # (the training progress bar does not end its line before the error: requests_from_robustness.md)
    assert "duiit: error: " in last and "cannot write" in last, last
    last = last.split("duiit: error: ", 1)[1]
    for word in words:
        assert str(word) in last, (word, last)
    if disk.kind == "tmpfs":
        assert "no space left on device" in last, last


def assert_nothing_lost(disk, before, tally):
    after = snapshot(disk.folder)
    assert after.keys() == before.keys(), f"files appeared or vanished: {sorted(after.keys() ^ before.keys())}"
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, f"earlier outputs changed: {changed}"
    tally.add("faults injected")
    tally.add("outputs checked", len(before))
    tally.report("disk", f"injected {tally.counts['faults injected']} full-disk faults (checkpoint, bundle, export, "
                         f"translate; tmpfs and file size limit): each a clear error with exit code 2; nothing lost "
                         f"({tally.counts['outputs checked']} earlier outputs unchanged byte for byte, no temporary "
                         f"files left)")


def train_args(manifest, out, *extra):
    return ["train", "--manifest", manifest, "--source", "MR", "--task", "classification", "--method", "duiit",
            "-o", out, "--iterations", "6", "--warmup", "0.2", *TINY, *extra]


@pytest.fixture
def earlier_training(trained_bundle, disk):
    """The session's trained bundle and its final checkpoint, as earlier outputs on the small disk."""
    out = disk.folder / "model.duiit"
    shutil.copy(trained_bundle, out)
    shutil.copy(str(trained_bundle) + ".ckpt", str(out) + ".ckpt")
    return out


def test_full_disk_during_a_checkpoint(mr_cohort, disk, earlier_training, tally):
    """Training afresh over an earlier run: the first checkpoint cannot be written."""
    before = snapshot(disk.folder)
    with one_thread(), disk.full():
        result = run_cli(*train_args(mr_cohort, earlier_training, "--checkpoint-every", "1"))
    assert_fails_cleanly(result, disk, "model.duiit.ckpt")
    assert_nothing_lost(disk, before, tally)


def test_full_disk_while_writing_the_bundle(mr_cohort, disk, earlier_training, tally):
    """Resuming a finished run (its checkpoint is at the last step) only evaluates and writes the bundle."""
    before = snapshot(disk.folder)
    with one_thread(), disk.full():
        result = run_cli(*train_args(mr_cohort, earlier_training, "--resume"))
    assert_fails_cleanly(result, disk, "model.duiit")
    assert_nothing_lost(disk, before, tally)


def test_full_disk_during_export(trained_bundle, mr_cohort, disk, tally):
    out = disk.folder / "export"
    assert run_cli("export", trained_bundle, "--manifest", mr_cohort, "-o", out).returncode == 0
    before = snapshot(disk.folder)
    assert len(before) == 7  # six volumes and labels.csv
    with disk.full():
        result = run_cli("export", trained_bundle, "--manifest", mr_cohort, "-o", out)
    assert_fails_cleanly(result, disk, "export stopped after 0 of 6 volumes")
    assert_nothing_lost(disk, before, tally)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha", "ct_dicom"])
def test_full_disk_during_translate(trained_bundle, mr_cohort, disk, tally, name):
    source = mr_cohort.parent / "mr_01.nii.gz"
    out = disk.folder / name
    assert run_cli("translate", trained_bundle, source, "-o", out).returncode == 0
    before = snapshot(disk.folder)
    with disk.full():
        result = run_cli("translate", trained_bundle, source, "-o", out)
    assert_fails_cleanly(result, disk, name)
    assert_nothing_lost(disk, before, tally)
