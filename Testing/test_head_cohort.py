"""Head MR -> CT cohorts from the real sample images: geometry, HU, lesion contrast per modality, labels
that match the masks, distinct patients, splits by patient, and the paired check set with SIMULATED MR."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from duiit import head_cohort as hc
from duiit import sample_data
from duiit.errors import DuiitError
from duiit.manifest import read_manifest


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    try:
        samples = sample_data.fetch_all()
    except DuiitError as exc:
        pytest.skip(f"the real sample images cannot be fetched here: {exc}")
    return samples, hc.load_real_volumes(samples)


@pytest.fixture(scope="module")
def cohort(real, tmp_path_factory):
    samples, volumes = real
    out = tmp_path_factory.mktemp("cohort") / "tiny"
    manifest = hc.build_cohort(out, n_ct_patients=4, n_mr_patients=4, n_check=1, seed=3, size="tiny",
                               samples=samples, real_volumes=volumes)
    rows = list(csv.DictReader(open(manifest)))
    checks = list(csv.DictReader(open(out / "check_manifest.csv")))
    return out, rows, checks, json.loads((out / "cohort.json").read_text())


def _array(root, relative):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(root / relative))).astype(np.float32)


def _ring(mask, spacing, inner=3.0, outer=10.0):
    """Voxels inner..outer mm outside the mask."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                                   squaredDistance=False, useImageSpacing=True))
    return (distance > inner) & (distance < outer)


def test_manifest_rows_and_splits(cohort):
    root, rows, checks, summary = cohort
    assert list(rows[0])[:6] == ["path", "modality", "label", "patient_id", "split", "mask"]
    cases = read_manifest(root / "manifest.csv")              # the core's reader accepts it
    assert len(cases) == 8 and all(c.path.is_file() and c.mask.is_file() for c in cases)
    assert [r["modality"] for r in rows].count("CT") == 4 and [r["modality"] for r in rows].count("MR") == 4
    ids = [r["patient_id"] for r in rows]
    assert len(set(ids)) == len(ids)                          # one volume per patient: splits are by patient
    assert {r["split"] for r in rows if r["modality"] == "CT"} == {"train", "test"}
    assert {r["split"] for r in rows if r["modality"] == "MR"} == {"train"}
    assert {r["label"] for r in rows} <= {"lesion", "none"}
    assert {r["label"] for r in rows if r["modality"] == "CT" and r["split"] == "train"} == {"lesion"}
    assert {r["source_volume"] for r in rows if r["modality"] == "MR"} == {"colin27_t1", "brain1_t1", "brain2_t1"}
    assert not {r["patient_id"] for r in checks} & set(ids)


def test_geometry_is_the_common_frame(cohort):
    root, rows, checks, _ = cohort
    for row in rows + checks:
        image = sitk.ReadImage(str(root / row["path"]))
        size, dz, most = hc.PRESETS["tiny"]
        assert image.GetSize()[:2] == (size, size) and 10 <= image.GetSize()[2] <= most
        np.testing.assert_allclose(image.GetSpacing(), (hc.FOV_MM / size, hc.FOV_MM / size, dz))
        np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel())
        for other in ("mask", "head_mask", "paired_ct"):
            if row.get(other):
                companion = sitk.ReadImage(str(root / row[other]))
                assert companion.GetSize() == image.GetSize()
                np.testing.assert_allclose(companion.GetOrigin(), image.GetOrigin())


def test_labels_match_masks(cohort):
    root, rows, _, summary = cohort
    for row in rows:
        mask = _array(root, row["mask"])
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert row["label"] == ("lesion" if mask.any() else "none")
        slices = [int(k) for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]]
        assert summary["cases"][row["patient_id"]]["lesion_slices"] == slices
        if row["label"] == "lesion":
            assert 0 < len(slices) < mask.shape[0]            # slice labels have both classes
        record = summary["cases"][row["patient_id"]]
        assert (mask == 1).any() == bool(record["simulated_lesions"])
        assert (mask == 2).any() == (row["source_volume"] in ("brain1_t1", "brain2_t1"))


def test_ct_hu_and_hyperdense_lesions(cohort):
    root, rows, _, _ = cohort
    lesions = 0
    for row in (r for r in rows if r["modality"] == "CT"):
        hu, mask, head = _array(root, row["path"]), _array(root, row["mask"]), _array(root, row["head_mask"])
        assert hu.min() >= -1024 and hu.max() <= 3071
        assert np.median(hu[head == 0]) == pytest.approx(-1000, abs=15)       # air
        assert (hu[head > 0] > 700).mean() > 0.02                               # skull
        soft = hu[(head > 0) & (mask == 0) & (hu > 0) & (hu < 60)]
        assert 12 < np.median(soft) < 40                                        # brain
        if (mask == 1).any():
            lesions += 1
            spacing = sitk.ReadImage(str(root / row["path"])).GetSpacing()
            ring = _ring(mask == 1, spacing) & (head > 0) & (hu > -50) & (hu < 150)
            inside = np.median(hu[mask == 1])
            assert 45 < inside < 95                                             # haemorrhage-like HU
            assert inside > np.median(hu[ring]) + 25                            # hyperdense to brain
    assert lesions >= 2


def test_mr_lesions_are_hyperintense(cohort):
    root, rows, _, _ = cohort
    seen = 0
    for row in (r for r in rows if r["modality"] == "MR"):
        signal, mask, head = _array(root, row["path"]), _array(root, row["mask"]), _array(root, row["head_mask"])
        assert signal.min() >= 0 and np.median(signal[head == 0]) < 0.1 * np.percentile(signal[head > 0], 99)
        if (mask == 1).any():
            seen += 1
            spacing = sitk.ReadImage(str(root / row["path"])).GetSpacing()
            ring = _ring(mask == 1, spacing) & (head > 0) & (mask == 0)
            assert np.median(signal[mask == 1]) > 1.1 * np.median(signal[ring])
    assert seen >= 1


def test_insert_lesions_contrast_per_modality():
    grid = sitk.Image(40, 40, 12, sitk.sitkFloat32)
    grid.SetSpacing((2.0, 2.0, 4.0))
    grid.SetOrigin((-39.0, -39.0, -22.0))
    brain = np.ones((12, 40, 40), dtype=np.uint8)
    lesion = hc.Lesion((1.0, 1.0, 2.0), (8.0, 8.0, 8.0), 0.0, 75.0)
    rng = np.random.default_rng(0)
    ct, mask = hc.insert_lesions(np.full((12, 40, 40), 30.0, np.float32), brain, [lesion], grid, "CT", rng)
    assert mask[6, 20, 20] == 1 and mask.sum() > 20 and mask[0].sum() == 0
    assert np.median(ct[mask == 1]) == pytest.approx(75, abs=8) and ct[0].max() == 30.0
    lesion = hc.Lesion((1.0, 1.0, 2.0), (8.0, 8.0, 8.0), 0.0, 0.45)
    mr, mask = hc.insert_lesions(np.full((12, 40, 40), 500.0, np.float32), brain, [lesion], grid, "MR", rng)
    core = hc.lesion_weight(lesion, grid) > 0.95
    assert np.median(mr[core]) == pytest.approx(725, rel=0.12)
    assert mr[core].std() > 5                                 # heterogeneous
    assert 1.3 * 500 < np.percentile(mr[core], 50) < 1.6 * 500


def test_lesions_inside_the_brain(cohort, real):
    root, rows, _, summary = cohort
    for row in rows:
        record = summary["cases"][row["patient_id"]]
        head = sitk.ReadImage(str(root / row["head_mask"]))
        depth = sitk.SignedMaurerDistanceMap(head > 0, insideIsPositive=True, squaredDistance=False,
                                             useImageSpacing=True)
        for lesion in record["simulated_lesions"]:
            assert all(hc.LESION_RADIUS_MM[0] <= a <= hc.LESION_RADIUS_MM[1] for a in lesion["semi_axes_mm"])
            index = head.TransformPhysicalPointToIndex(lesion["centre_mm"])
            assert depth[index] > max(lesion["semi_axes_mm"]) + 5   # well inside the head, away from the skull


def test_patients_are_distinct_augmentations(cohort):
    root, rows, _, summary = cohort
    ct = [r for r in rows if r["modality"] == "CT"]
    arrays = [_array(root, r["path"]) for r in ct]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            if arrays[i].shape == arrays[j].shape:
                assert np.abs(arrays[i] - arrays[j]).mean() > 20
    augmentations = [summary["cases"][r["patient_id"]]["augmentation"] for r in rows]
    assert len({json.dumps(a, sort_keys=True) for a in augmentations}) == len(rows)
    for a in augmentations:
        assert 0.9 <= a["scale"] <= 1.1 and -10 <= a["rotation_deg"] <= 10
    assert "augmentations of 1 real CT volume" in summary["what"]
    assert "augmentations of 3 real MR volumes" in summary["what"]
    assert [v["name"] for v in summary["real_volumes"]] == ["cranium_ct", "colin27_t1", "brain1_t1", "brain2_t1"]


def test_make_case_is_reproducible(real):
    _, volumes = real
    ct = volumes[0]
    first = hc.make_case(ct, "tiny", np.random.default_rng(7), 1)
    again = hc.make_case(ct, "tiny", np.random.default_rng(7), 1)
    other = hc.make_case(ct, "tiny", np.random.default_rng(8), 1)
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["lesion_mask"], again["lesion_mask"])
    assert first["record"]["augmentation"] != other["record"]["augmentation"]


def test_mr_lesion_gain_changes_only_how_bright_the_mr_lesions_are(real, tmp_path):
    samples, volumes = real
    mr = volumes[1]
    default = hc.make_case(mr, "tiny", np.random.default_rng(5), 1)
    faint = hc.make_case(mr, "tiny", np.random.default_rng(5), 1, mr_lesion_gain=(0.1, 0.2))
    np.testing.assert_array_equal(default["lesion_mask"], faint["lesion_mask"])  # same patient, same lesion
    lesion = default["lesion_mask"] == 1
    assert lesion.any()
    near = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(lesion.astype(np.uint8)), [2, 2, 2])) > 0
    changed = ~np.isclose(default["clean"], faint["clean"], rtol=1e-5, atol=1e-3)
    assert changed[lesion].any() and not changed[~near].any()   # only the lesion (and its soft edge) changed
    gains = [c["record"]["simulated_lesions"][0]["contrast"] for c in (default, faint)]
    assert 0.3 <= gains[0] <= 0.6 and 0.1 <= gains[1] <= 0.2
    assert faint["clean"][lesion].mean() < default["clean"][lesion].mean()
    dark = hc.make_case(mr, "tiny", np.random.default_rng(5), 1, mr_lesion_gain=(-0.35, -0.2))
    np.testing.assert_array_equal(default["lesion_mask"], dark["lesion_mask"])
    brain_nearby = near & ~lesion & (default["clean"] > 0.5 * np.median(default["clean"][lesion]))
    assert dark["clean"][lesion].mean() < 0.9 * dark["clean"][brain_nearby].mean()  # darker than its brain
    for bad in ((0.2, 0.1), (-0.2, 0.2), (-1.0, -0.5)):
        with pytest.raises(DuiitError, match="MR lesion gain"):
            hc.build_cohort(tmp_path / "bad", n_ct_patients=2, n_mr_patients=1, size="tiny", samples=samples,
                            real_volumes=volumes, mr_lesion_gain=bad)
    assert not (tmp_path / "bad").exists()


def test_check_set_mr_is_simulated_and_tissue_plausible(cohort):
    root, _, checks, summary = cohort
    assert len(checks) == 1
    row = checks[0]
    assert row["simulated"] == "yes" and "simulated" in row["path"]
    assert "SIMULATED" in summary["cases"][row["patient_id"]]["mr_simulation"]["note"]
    mr, ct, head = _array(root, row["path"]), _array(root, row["paired_ct"]), _array(root, row["head_mask"])
    assert mr.shape == ct.shape == head.shape
    assert -1030 < np.median(ct[head == 0]) < -970 and (ct > 700).any()
    tissue = lambda low, high: np.median(mr[(ct >= low) & (ct < high)])  # noqa: E731
    air, fat, csf, brain, bone = (tissue(-1100, -900), tissue(-150, -60), tissue(-5, 8), tissue(15, 35),
                                  tissue(900, 3100))
    assert air < 0.1 * brain                                  # air dark
    assert fat > brain                                        # fat bright on T1
    assert csf < 0.7 * brain                                  # CSF dark
    assert bone < 0.5 * brain                                 # cortical bone dark


def test_refuses_a_folder_that_is_not_a_cohort(tmp_path, real):
    samples, volumes = real
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(DuiitError, match="not a DUIIT cohort folder"):
        hc.build_cohort(tmp_path, n_ct_patients=2, n_mr_patients=1, size="tiny", samples=samples,
                        real_volumes=volumes)
    assert keep.read_text() == "mine"
    with pytest.raises(DuiitError, match="unknown cohort size"):
        hc.build_cohort(tmp_path / "new", size="huge", samples=samples, real_volumes=volumes)


def test_the_averaged_heads_can_be_chosen_and_unknown_names_are_refused(real, tmp_path):
    samples, _ = real
    manifest = hc.build_cohort(tmp_path / "five", n_ct_patients=2, n_mr_patients=2, n_check=0, size="tiny",
                               samples=samples, mr_volumes=["mni152_t1", "mean_head_t1"])
    rows = [r for r in csv.DictReader(open(manifest)) if r["modality"] == "MR"]
    assert [r["source_volume"] for r in rows] == ["mni152_t1", "mean_head_t1"]
    for row in rows:  # a head with a brain in it: the same tissue layout as the single-subject T1s
        mr, head = _array(manifest.parent, row["path"]), _array(manifest.parent, row["head_mask"]) > 0
        assert 0.1 < head.mean() < 0.6 and np.median(mr[head]) > 5 * np.median(mr[~head])
    with pytest.raises(DuiitError, match="unknown real MR volume"):
        hc.load_real_volumes(samples, ["colin27_t1", "nonesuch_t1"])


def test_a_cohort_fetches_only_the_samples_it_reads():
    assert hc.needed_samples() == ["cranium_ct", "colin27_t1", "colin27_brain", "brain1_t1", "brain1_tumour",
                                   "brain2_t1", "brain2_tumour"]
    assert hc.needed_samples(["mni152_t1", "mean_head_t1"]) == ["cranium_ct", "mni152_t1", "mni152_brain",
                                                                "mean_head_t1"]
    assert set(hc.needed_samples(hc.MR_VOLUMES)) <= set(sample_data.SAMPLES)


def test_simulated_t1_patients_follow_their_ct_lesions(real, tmp_path):
    samples, volumes = real
    assert hc.needed_samples([hc.SIMULATED_T1]) == ["cranium_ct"]
    manifest = hc.build_cohort(tmp_path / "sim", n_ct_patients=2, n_mr_patients=3, n_check=0, size="tiny",
                               lesion_fraction=1.0, samples=samples, real_volumes=[volumes[0], volumes[0]])
    root = manifest.parent
    rows = [r for r in csv.DictReader(open(manifest)) if r["modality"] == "MR"]
    assert {r["source_volume"] for r in rows} == {"simulated_t1 (from cranium_ct)"}
    summary = json.loads((root / "cohort.json").read_text())
    assert "3 MR patients are T1s SIMULATED" in summary["what"] and "brain1" not in summary["what"]
    assert [v["name"] for v in summary["real_volumes"]] == ["cranium_ct"] and summary["counts"]["mr_simulated"] == 3
    lesion_rows = [r for r in rows if r["label"] == "lesion"]
    assert len(lesion_rows) == 2   # lesion_fraction 1: all but one patient
    spacing = sitk.ReadImage(str(root / rows[0]["path"])).GetSpacing()
    for row in lesion_rows:
        mr, lesion = _array(root, row["path"]), _array(root, row["mask"]) > 0
        record = summary["cases"][row["patient_id"]]
        assert record["mr_simulation"]["mapping"].startswith("T1_FROM_HU")
        # the CT lesion (65-85 HU) seen through the T1 mapping: darker than the brain around it, as acute blood
        assert np.median(mr[lesion]) < 0.95 * np.median(mr[_ring(lesion, spacing)])


def test_command_line_builds_a_simulated_t1_cohort_and_refuses_unknown_volumes(real, tmp_path, capsys):
    # the `real` fixture has fetched the images into the default cache, which the command reads too
    assert hc.main([str(tmp_path / "sim"), "--ct", "2", "--mr", "1", "--check", "0", "--size", "tiny",
                    "--mr-volumes", "simulated_t1"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sim" / "manifest.csv")))
    assert [r["source_volume"] for r in rows if r["modality"] == "MR"] == ["simulated_t1 (from cranium_ct)"]
    assert hc.main([str(tmp_path / "bad"), "--size", "tiny", "--mr-volumes", "nonesuch_t1"]) == 2
    assert "unknown real MR volume" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert hc.main([str(tmp_path / "gain"), "--size", "tiny", "--mr-lesion-gain=0.5,0.1"]) == 2
    assert "MR lesion gain" in capsys.readouterr().err


def test_unlabelled_ct_patients_are_added_without_changing_the_others(real, tmp_path, capsys):
    common = ["--ct", "2", "--mr", "1", "--check", "0", "--size", "tiny", "--mr-volumes", "simulated_t1"]
    assert hc.main([str(tmp_path / "plain"), *common]) == 0
    assert hc.main([str(tmp_path / "more"), *common, "--ct-unlabelled", "2"]) == 0
    plain = list(csv.DictReader(open(tmp_path / "plain" / "manifest.csv")))
    more = list(csv.DictReader(open(tmp_path / "more" / "manifest.csv")))
    assert more[:len(plain)] == plain                          # the labelled patients are the same ...
    for row in plain:
        np.testing.assert_array_equal(_array(tmp_path / "plain", row["path"]), _array(tmp_path / "more", row["path"]))
    added = more[len(plain):]
    assert [(r["patient_id"], r["modality"], r["split"], r["label"], r["mask"]) for r in added] == [
        ("CTU-001", "CT", "unlabelled", "", ""), ("CTU-002", "CT", "unlabelled", "", "")]
    summary = json.loads((tmp_path / "more" / "cohort.json").read_text())
    assert summary["counts"]["ct"] == 2 and summary["counts"]["ct_unlabelled"] == 2
    assert "2 unlabelled" in summary["what"]
    assert "lesion_slices" in summary["cases"]["CTU-001"]     # what they show is recorded, not given to training
    cases = read_manifest(tmp_path / "more" / "manifest.csv")
    assert [c.patient_id for c in cases if not c.labelled] == ["CTU-001", "CTU-002"]
    assert hc.main([str(tmp_path / "bad"), *common, "--ct-unlabelled", "-1"]) == 2
    assert "-1 unlabelled CT patients" in capsys.readouterr().err


def test_twins_are_the_lesion_patients_without_their_lesions(real, tmp_path):
    common = ["--ct", "3", "--mr", "2", "--check", "0", "--size", "tiny", "--mr-volumes", "colin27_t1"]
    assert hc.main([str(tmp_path / "plain"), *common]) == 0
    assert hc.main([str(tmp_path / "twins"), *common, "--twins"]) == 0
    plain = list(csv.DictReader(open(tmp_path / "plain" / "manifest.csv")))
    rows = list(csv.DictReader(open(tmp_path / "twins" / "manifest.csv")))
    assert [r for r in rows if not r["patient_id"].endswith("-twin")] == plain  # the others do not change
    twins = [r for r in rows if r["patient_id"].endswith("-twin")]
    lesion_rows = [r for r in plain if r["label"] == "lesion"]
    assert [t["patient_id"] for t in twins] == [r["patient_id"] + "-twin" for r in lesion_rows] and twins
    for row in lesion_rows:
        twin = next(t for t in twins if t["patient_id"] == row["patient_id"] + "-twin")
        assert (twin["split"], twin["modality"], twin["label"], twin["mask"]) == (row["split"], row["modality"],
                                                                                  "none", "")
        image, plain_twin = _array(tmp_path / "plain", row["path"]), _array(tmp_path / "twins", twin["path"])
        lesion = _array(tmp_path / "plain", row["mask"]) > 0
        near = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(lesion.astype(np.uint8)), [4] * 3)) > 0
        assert np.abs(image[~near] - plain_twin[~near]).max() <= (1 if row["modality"] == "CT" else 0.05 * image.max())
        assert np.abs(image[lesion] - plain_twin[lesion]).mean() > 5 * np.abs(image[~near] - plain_twin[~near]).mean()
