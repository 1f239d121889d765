"""DUIIT Train's series listing, labels and manifest against DICOM files written by the test (pydicom),
through FolderDicomDatabase: the same methods Slicer's ctkDICOMDatabase has."""

import numpy as np
import pytest
import slicer_helpers  # noqa: F401  (puts the modules' Lib folders on sys.path)
from dicom_factory import write_series

from duiit.errors import DuiitError


@pytest.fixture
def dicom_folder(tmp_path):
    """Two patients: CT + MR for P1, CT + PET for P2, an MR for P3 whose files share a folder with P3's CT,
    and a non-image DICOM (SR) that must not be listed."""
    rng = np.random.default_rng(0)
    root = tmp_path / "dicom"
    plane = lambda: rng.normal(100, 10, (4, 16, 16))  # noqa: E731
    write_series(root / "p1" / "ct", plane(), "CT", patient_id="P1", study_uid="1.2.3.1", age="045Y",
                 description="head CT")
    write_series(root / "p1" / "mr", plane(), "MR", patient_id="P1", study_uid="1.2.3.1", age="045Y",
                 description="T1")
    write_series(root / "p2" / "ct", plane(), "CT", patient_id="P2", study_uid="1.2.3.2", age="006M")
    write_series(root / "p2" / "pt", plane(), "PT", patient_id="P2", study_uid="1.2.3.2", age="006M")
    mixed = root / "p3"
    write_series(mixed, plane(), "MR", patient_id="P3", study_uid="1.2.3.3", age="070Y", series_uid="1.2.3.3.1")
    for path in mixed.glob("*.dcm"):
        path.rename(mixed / f"mr_{path.name}")
    write_series(mixed, plane(), "CT", patient_id="P3", study_uid="1.2.3.3", age="070Y", series_uid="1.2.3.3.2")
    _write_sr(root / "sr" / "report.dcm")
    (root / "notes.txt").write_text("not DICOM")
    return root


def _write_sr(path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    path.parent.mkdir(parents=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "SR", "P1", "1.2.3.1", generate_uid()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture
def database(dicom_folder):
    from duiit.dicom_index import FolderDicomDatabase
    return FolderDicomDatabase(dicom_folder)


def test_lists_target_and_source_series_only(database):
    from DUIITTrainLib.logic import list_candidate_series
    mr = list_candidate_series(database, "CT", "MR")
    assert [(s.modality, s.patient_id) for s in mr] == [("CT", "P1"), ("CT", "P2"), ("CT", "P3"), ("MR", "P1"),
                                                        ("MR", "P3")]
    assert all(s.n_images == 4 and len(s.files) == 4 for s in mr)
    assert {s.series_description for s in mr if s.patient_id == "P1"} == {"head CT", "T1"}
    pet = list_candidate_series(database, "CT", "PT")
    assert [(s.modality, s.patient_id) for s in pet] == [("CT", "P1"), ("CT", "P2"), ("CT", "P3"), ("PT", "P2")]


def test_labels_from_dicom_tag_parse_ages(database):
    from DUIITTrainLib.labels import labels_from_dicom_tag
    from DUIITTrainLib.logic import list_candidate_series
    series = list_candidate_series(database, "CT", "MR")
    ages = labels_from_dicom_tag(database, series, "PatientAge", "regression")
    assert {s.patient_id: ages[s.series_uid] for s in series} == {"P1": "45", "P2": "0.5", "P3": "70"}
    assert labels_from_dicom_tag(database, series, "(0010,1010)", "regression") == ages
    names = labels_from_dicom_tag(database, series, "0010,0010", "classification")
    assert names[series[0].series_uid] == "Test^P1"
    with pytest.raises(DuiitError, match="not a number"):
        labels_from_dicom_tag(database, series, "PatientName", "regression")


def test_labels_from_csv_most_specific_key_wins(database, tmp_path):
    from DUIITTrainLib.labels import read_label_csv
    from DUIITTrainLib.logic import list_candidate_series
    series = list_candidate_series(database, "CT", "MR")
    p1_mr = next(s for s in series if s.patient_id == "P1" and s.modality == "MR")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("PatientID,SeriesInstanceUID,diagnosis\n"
                        "P1,,tumour\nP2,,healthy\n"
                        f",{p1_mr.series_uid},oedema\n")
    table = read_label_csv(csv_path)
    assert table.label_column == "diagnosis" and table.keys == ["series", "patient"]
    found = {(s.patient_id, s.modality): table.lookup(s) for s in series}
    assert found == {("P1", "CT"): "tumour", ("P1", "MR"): "oedema", ("P2", "CT"): "healthy",
                     ("P3", "CT"): None, ("P3", "MR"): None}
    semicolons = tmp_path / "study.csv"
    semicolons.write_text("StudyInstanceUID;label\n1.2.3.3;70\n")
    assert read_label_csv(semicolons).lookup(series[2]) == "70"
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("PatientID,label\nP1,a\nP1,b\n")
    with pytest.raises(DuiitError, match="two labels"):
        read_label_csv(conflict)
    keyless = tmp_path / "keyless.csv"
    keyless.write_text("name,label\nx,1\n")
    with pytest.raises(DuiitError, match="PatientID, StudyInstanceUID or SeriesInstanceUID"):
        read_label_csv(keyless)


def test_manifest_from_ticked_series_is_readable_by_the_core(database, tmp_path):
    from DUIITTrainLib.logic import TrainSettings, list_candidate_series, write_manifest

    from duiit.manifest import read_manifest
    from duiit.volume_io import read_volume
    series = list_candidate_series(database, "CT", "MR")
    labels = {"P1": "tumour", "P2": "healthy", "P3": "tumour"}
    selected = [(s, labels[s.patient_id]) for s in series]
    settings = TrainSettings(output_folder=str(tmp_path / "run"), source_modality="MR")
    path = write_manifest(selected, settings)
    assert path == settings.manifest and path.is_file()
    cases = read_manifest(path)
    assert [(c.modality, c.patient_id, c.label) for c in cases] == [
        (s.modality, s.patient_id, labels[s.patient_id]) for s in series]
    for case, info in zip(cases, series):
        assert case.series_uid == info.series_uid
        image = read_volume(case.path, case.series_uid)  # P3's folder holds two series: the uid picks one
        assert image.GetSize() == (16, 16, 4)


def test_manifest_refuses_what_training_would_refuse(database, tmp_path):
    from DUIITTrainLib.logic import TrainSettings, list_candidate_series, write_manifest
    series = list_candidate_series(database, "CT", "MR")
    settings = TrainSettings(output_folder=str(tmp_path / "run"), task="regression")
    cts = [(s, "40") for s in series if s.modality == "CT"]
    with pytest.raises(DuiitError, match="at least one MR"):
        write_manifest(cts, settings)
    with pytest.raises(DuiitError, match="not: old"):
        write_manifest(cts + [(series[-1], "old")], settings)
    with pytest.raises(DuiitError, match="1 selected series have no label"):
        write_manifest(cts + [(series[-1], "")], settings)
    settings.task = "classification"
    with pytest.raises(DuiitError, match="at least two classes"):
        write_manifest([(s, "x") for s in series], settings)
    settings.method = "target-only"
    assert write_manifest([(s, "ab"[n % 2]) for n, (s, _) in enumerate(cts)], settings).is_file()
    assert not (tmp_path / "run" / "series").exists()  # every series had its own folder: nothing staged


def test_ct_series_left_without_a_label_train_the_translator_only(database, tmp_path):
    from DUIITTrainLib.logic import TrainSettings, list_candidate_series, write_manifest

    from duiit.manifest import read_manifest
    series = list_candidate_series(database, "CT", "MR")
    labels = {("CT", "P1"): "a", ("CT", "P2"): "", ("CT", "P3"): "b", ("MR", "P1"): "a", ("MR", "P3"): "b"}
    selected = [(s, labels[s.modality, s.patient_id]) for s in series]
    settings = TrainSettings(output_folder=str(tmp_path / "run"), source_modality="MR", method="cyclegan")
    cases = read_manifest(write_manifest(selected, settings))
    assert [(c.patient_id, c.split, c.labelled) for c in cases if c.modality == "CT"] == [
        ("P1", "", True), ("P2", "unlabelled", False), ("P3", "", True)]
    settings.method = "naive"
    with pytest.raises(DuiitError, match="1 CT series have no label.*duiit and cyclegan"):
        write_manifest(selected, settings)
    settings.method = "duiit"
    with pytest.raises(DuiitError, match="patient P1 has labelled and unlabelled series"):
        write_manifest([(s, "" if s.modality == "CT" and s.patient_id == "P1" else label) for s, label in selected],
                       settings)
    with pytest.raises(DuiitError, match="give at least one CT series a label"):
        write_manifest([(s, "" if s.modality == "CT" else label) for s, label in selected], settings)
    with pytest.raises(DuiitError, match="1 selected series have no label"):  # an MR series still needs one
        write_manifest([(s, "" if s.modality == "MR" and s.patient_id == "P3" else label) for s, label in selected],
                       settings)


def test_series_spread_over_folders_is_staged(database, tmp_path):
    from DUIITTrainLib.logic import list_candidate_series, stage_series

    from duiit.dicom_index import SeriesInfo
    from duiit.volume_io import read_volume
    info = next(s for s in list_candidate_series(database, "CT", "MR") if s.modality == "MR" and s.patient_id == "P1")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    files = sorted(info.files)
    (moved / "x.dcm").write_bytes(open(files[0], "rb").read())
    spread = SeriesInfo(info.patient_id, info.patient_name, info.study_uid, "", info.series_uid, "", "MR", 4,
                        [str(moved / "x.dcm"), *files[1:]])
    staged = stage_series(spread, tmp_path / "staging")
    assert staged.parent == tmp_path / "staging" and len(list(staged.iterdir())) == 4
    assert read_volume(staged, info.series_uid).GetSize() == (16, 16, 4)
