"""A batch export over 50 volumes keeps memory flat (no growth per volume), and a bad volume in the middle
is skipped, reported and the batch goes on."""

import csv

import numpy as np
import SimpleITK as sitk

from conftest import run_cli
from duiit.bundle import load_bundle
from duiit.export import export_cohort
from duiit.manifest import write_manifest
from duiit.phantom import head_phantom
from robustness_tally import heap_bytes, one_thread, tally  # noqa: F401  (tally is a fixture)

VOLUMES = 50
BAD_AT = 25
SHAPE = (8, 64, 64)  # small, but 128 kB per volume: a volume kept per iteration would show as 6 MB
GROWTH_LIMIT = 2 * 2 ** 20  # over the last 40 volumes


def write_cohort(folder, count, bad_at):
    folder.mkdir()
    rows = []
    for n in range(count):
        if n == bad_at:  # a download cut short: the header promises more voxels than the file holds
            image, _ = head_phantom(SHAPE, "MR", seed=999)
            sitk.WriteImage(image, str(folder / "whole.nii"))
            data = (folder / "whole.nii").read_bytes()
            (folder / "bad.nii").write_bytes(data[:len(data) // 2])
            (folder / "whole.nii").unlink()
            rows.append({"path": "bad.nii", "modality": "MR", "label": "none", "patient_id": "BAD"})
            continue
        image, _ = head_phantom(SHAPE, "MR", lesion=n % 2 == 1, seed=n)
        sitk.WriteImage(image, str(folder / f"mr_{n:02d}.nii.gz"))
        rows.append({"path": f"mr_{n:02d}.nii.gz", "modality": "MR", "label": "lesion" if n % 2 else "none",
                     "patient_id": f"MR{n:02d}"})
    write_manifest(rows, folder / "manifest.csv")
    return folder / "manifest.csv"


def test_batch_export_has_flat_memory_and_skips_a_bad_volume(trained_bundle, tmp_path, tally):
    manifest = write_cohort(tmp_path / "cohort", VOLUMES + 1, BAD_AT)
    bundle = load_bundle(trained_bundle)
    reports, memory = [], []

    def report(n, total, case, error):
        reports.append((n, total, case.patient_id, error))
        if error is None:
            memory.append(heap_bytes())

    with one_thread():
        result = export_cohort(bundle, manifest, tmp_path / "out", device="cpu", report=report)

    # skipped, reported, and the batch went on to the end
    assert [r[0] for r in reports] == list(range(1, VOLUMES + 2)) and reports[-1][1] == VOLUMES + 1
    bad = [r for r in reports if r[3] is not None]
    assert [(r[0], r[2]) for r in bad] == [(BAD_AT + 1, "BAD")] and "truncated" in bad[0][3]
    assert len(result["written"]) == VOLUMES
    assert [name for name, _ in result["failed"]] == ["BAD (bad.nii)"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "labels.csv")))
    assert len(rows) == VOLUMES and "BAD" not in {r["patient_id"] for r in rows}
    assert {r["patient_id"] for r in rows} >= {"MR26", "MR49"}

    # flat memory: no trend in the heap over the last 40 volumes (the first ones warm caches up)
    tail = np.array(memory[-40:], dtype=np.float64)
    growth = np.polyfit(np.arange(len(tail)), tail, 1)[0] * (len(tail) - 1)
    assert growth < GROWTH_LIMIT, f"memory grew {growth / 2 ** 20:.1f} MB over 40 volumes"
    assert tail.max() - tail[0] < 2 * GROWTH_LIMIT
    tally.report("export", f"exported {len(result['written'])} of {VOLUMES + 1} volumes, the bad one (#{BAD_AT + 1}) "
                           f"skipped and reported, the batch went on; heap over the last 40 volumes: "
                           f"{(tail.max() - tail.min()) / 2 ** 20:.1f} MB range, trend {growth / 2 ** 20:+.2f} MB")


def test_export_command_reports_skips_and_exit_code(trained_bundle, tmp_path):
    manifest = write_cohort(tmp_path / "cohort", 3, 1)
    with one_thread():
        result = run_cli("export", trained_bundle, "--manifest", manifest, "-o", tmp_path / "out")
    assert result.returncode == 1, result.stderr  # finished, with something skipped
    assert "[2/3] BAD (bad.nii): skipped: " in result.stderr and "truncated" in result.stderr
    assert "2 volumes written" in result.stdout and "1 skipped" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["MR00_mr_00.nii.gz", "MR02_mr_02.nii.gz",
                                                                    "labels.csv"]
