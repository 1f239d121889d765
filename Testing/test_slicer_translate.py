"""DUIIT Translate's logic on real MRML: volume node -> translate -> CT-like node, prediction table, refusals.

Uses the session's tiny trained bundle (conftest.trained_bundle, an MR -> CT classification model).
"""

import numpy as np
import pytest

from slicer_helpers import scene  # noqa: F401  (fixture)

from duiit import mrml
from duiit.errors import DuiitError


@pytest.fixture
def logic():
    from DUIITTranslateLib.logic import TranslateLogicCore
    return TranslateLogicCore()


def test_translate_node_matches_core_translation(scene, logic, trained_bundle):
    import slicer
    from DUIITTranslateLib.testing import add_phantom_volume

    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume

    input_node = add_phantom_volume("MR", name="MR input")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    input_node.SetAndObserveTransformNodeID(transform.GetID())
    before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    result = logic.translate(input_node, str(trained_bundle), modality="MR", device="cpu")

    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before + 1
    output = result.output_node
    assert output.GetName() == "MR input CT-like"
    assert np.array_equal(mrml.ijk_to_ras(output), mrml.ijk_to_ras(input_node))  # identical, not just close
    assert not np.allclose(mrml.ijk_to_ras(input_node)[:3, :3], np.diag(np.diag(mrml.ijk_to_ras(input_node)[:3, :3])))
    assert output.GetTransformNodeID() == transform.GetID()
    assert output.GetAttribute("DUIIT.sourceVolume") == input_node.GetID()

    reference = translate_volume(load_bundle(trained_bundle), mrml.image_from_volume_node(input_node), device="cpu")
    hu = slicer.util.arrayFromVolume(output)
    import SimpleITK as sitk
    assert np.array_equal(hu, sitk.GetArrayFromImage(reference.ct))
    assert hu.dtype == np.float32 and hu.shape == slicer.util.arrayFromVolume(input_node).shape
    assert hu.min() >= -1024.5 and hu.max() <= 3071.5 and np.ptp(hu) > 1.0

    display = output.GetDisplayNode()
    assert not display.GetAutoWindowLevel() and display.GetWindow() == 400.0

    assert result.error_map_node is None
    assert result.prediction["task"] == "classification"
    assert_same_prediction(result.prediction, reference.prediction)
    assert_same_prediction(mrml.prediction_from_table(result.table_node), reference.prediction)
    assert result.table_node.GetTable().GetNumberOfRows() == 1 + len(reference.prediction["slices"])


def test_translate_averages_the_views_asked_for(scene, logic, trained_bundle):
    import slicer
    import SimpleITK as sitk
    from DUIITTranslateLib.testing import add_phantom_volume

    from duiit.bundle import load_bundle
    from duiit.translate import translate_volume
    input_node = add_phantom_volume("MR", name="MR input")
    result = logic.translate(input_node, str(trained_bundle), modality="MR", device="cpu", views=4)
    image = mrml.image_from_volume_node(input_node)
    bundle = load_bundle(trained_bundle)
    averaged = sitk.GetArrayFromImage(translate_volume(bundle, image, device="cpu", views=4).ct)
    assert np.array_equal(slicer.util.arrayFromVolume(result.output_node), averaged)
    assert not np.array_equal(averaged, sitk.GetArrayFromImage(translate_volume(bundle, image, device="cpu").ct))


def assert_same_prediction(got, want):
    assert got["task"] == want["task"] and got["label_names"] == want["label_names"]
    assert got["volume"]["label"] == want["volume"]["label"]
    assert got["volume"]["probabilities"] == pytest.approx(want["volume"]["probabilities"], abs=1e-6)
    assert [s["index"] for s in got["slices"]] == [s["index"] for s in want["slices"]]
    for a, b in zip(got["slices"], want["slices"]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_translate_into_chosen_nodes_with_error_map(scene, logic, trained_bundle):
    import slicer
    from DUIITTranslateLib.testing import add_phantom_volume
    input_node = add_phantom_volume("MR", oblique=False)
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my CT")
    error_map = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my error map")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "my table")
    result = logic.translate(input_node, trained_bundle, output_node=output, error_map_node=error_map,
                             table_node=table, modality="mr")
    assert result.output_node is output and result.error_map_node is error_map and result.table_node is table
    assert table.GetName() == "my table"
    assert np.array_equal(mrml.ijk_to_ras(error_map), mrml.ijk_to_ras(input_node))
    errors = slicer.util.arrayFromVolume(error_map)
    assert errors.shape == slicer.util.arrayFromVolume(input_node).shape
    assert errors.min() >= 0.0 and errors.max() <= 2.0 + 1e-5 and errors.max() > 0.0


def test_wrong_modality_is_refused_without_touching_the_scene(scene, logic, trained_bundle):
    from DUIITTranslateLib.testing import add_phantom_volume
    input_node = add_phantom_volume("PT")
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(DuiitError, match="translates MR to CT, but the input volume is PT"):
        logic.translate(input_node, trained_bundle, modality="PT")
    with pytest.raises(DuiitError, match="modality is unknown"):
        logic.translate(input_node, trained_bundle)  # not from DICOM and nothing chosen
    assert scene.GetNumberOfNodes() == nodes


def test_not_a_bundle_is_a_message(scene, logic, tmp_path):
    from DUIITTranslateLib.testing import add_phantom_volume
    junk = tmp_path / "junk.duiit"
    junk.write_bytes(b"not a bundle at all")
    with pytest.raises(DuiitError, match="not a DUIIT model bundle"):
        logic.translate(add_phantom_volume("MR"), junk, modality="MR")
    with pytest.raises(DuiitError, match="choose an input volume"):
        logic.translate(None, junk)


def test_modality_from_subject_hierarchy_and_dicom_database(scene, tmp_path):
    """Nodes loaded from DICOM: modality from the subject hierarchy, else DICOM.instanceUIDs -> database."""
    import pydicom
    import slicer
    from dicom_factory import write_series
    from DUIITTranslateLib.logic import TranslateLogicCore, node_modality, series_tags

    from duiit.dicom_index import FolderDicomDatabase

    folder = write_series(tmp_path / "pet", np.full((3, 8, 8), 100.0), modality="PT", patient_id="P7")
    database = FolderDicomDatabase(tmp_path)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(folder.iterdir())]
    node = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8), dtype=np.float32), name="from DICOM")
    assert node_modality(node, database) is None
    node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    assert node_modality(node, database) == "PT"
    assert TranslateLogicCore(database).input_modality(node, "auto") == "PT"
    assert TranslateLogicCore(database).input_modality(node, "MR") == "MR"  # the user's choice wins
    assert series_tags(node, database)["PatientID"] == "P7"

    other = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8), dtype=np.float32), name="sh")
    sh = scene.GetSubjectHierarchyNode()
    series_item = sh.CreateFolderItem(sh.GetSceneItemID(), "series")
    sh.SetItemAttribute(series_item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), "MR")
    item = sh.GetItemByDataNode(other) or sh.CreateItem(series_item, other)  # headless: no automatic items
    sh.SetItemParent(item, series_item)
    assert node_modality(other, None) == "MR"
