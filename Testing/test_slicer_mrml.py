"""duiit.mrml on real MRML (slicer-core wheel): volume node <-> SimpleITK image, prediction table, CT window."""

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from slicer_helpers import scene  # noqa: F401  (fixture)

from duiit import mrml
from duiit.errors import DuiitError


def oblique_node(array, spacing=(0.7, 1.3, 2.9), origin=(10.5, -20.25, 33.1), degrees=(17.0, -8.0)):
    """A volume node with anisotropic spacing and a direction rotated about two axes (not axis-aligned)."""
    import slicer
    node = slicer.util.addVolumeFromArray(array, name="oblique")
    a, b = np.deg2rad(degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    directions = rz @ rx
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, directions[r, c])
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    return node


def test_round_trip_keeps_ijk_to_ras_exactly_and_voxels(scene):
    import slicer
    array = np.random.default_rng(1).integers(-1000, 2000, (5, 6, 7)).astype(np.int16)  # (K, J, I)
    node = oblique_node(array)
    image = mrml.image_from_volume_node(node)
    assert image.GetSize() == (7, 6, 5)  # (I, J, K)
    assert image.GetPixelID() == sitk.sitkInt16
    back = mrml.volume_node_from_image(image, name="back")
    assert back is not node and back.GetScene() is scene
    assert np.array_equal(mrml.ijk_to_ras(back), mrml.ijk_to_ras(node))  # bit for bit
    assert not np.allclose(mrml.ijk_to_ras(node)[:3, :3], np.diag(np.diag(mrml.ijk_to_ras(node)[:3, :3])))
    assert np.array_equal(slicer.util.arrayFromVolume(back), array)
    assert back.GetDisplayNode() is not None


def test_image_geometry_is_lps_of_the_node_ras(scene):
    """Every voxel sits at the same world point: RAS from the node's matrix = LPS from SimpleITK, flipped."""
    node = oblique_node(np.zeros((4, 5, 6), dtype=np.float32))
    image = mrml.image_from_volume_node(node)
    ijk_to_ras = mrml.ijk_to_ras(node)
    for index in [(0, 0, 0), (5, 0, 0), (0, 4, 0), (0, 0, 3), (5, 4, 3), (2, 1, 2)]:
        ras = ijk_to_ras @ np.array([*index, 1.0])
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        assert np.allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)
    assert np.allclose(image.GetSpacing(), (0.7, 1.3, 2.9))


def test_update_existing_node_and_float_voxels(scene):
    import slicer
    target = slicer.util.addVolumeFromArray(np.zeros((2, 2, 2), dtype=np.int16), name="target")
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5) - 30.5)
    image.SetSpacing((0.5, 0.25, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    node = mrml.volume_node_from_image(image, node=target)
    assert node is target
    assert slicer.util.arrayFromVolume(node).dtype == np.float32
    assert np.array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(image))
    ras = mrml.ijk_to_ras(node)
    assert np.allclose(ras[:3, 3], (10.0, -20.0, 5.0))  # LPS origin -> RAS
    # LPS column directions (0,-1,0) and (1,0,0) are RAS (0,1,0) and (-1,0,0), times the spacing
    assert np.allclose(ras[:3, 0], (0.0, 0.5, 0.0)) and np.allclose(ras[:3, 1], (-0.25, 0.0, 0.0))
    again = mrml.image_from_volume_node(node)
    assert again.GetDirection() == image.GetDirection() and again.GetOrigin() == image.GetOrigin()


def test_refuses_label_maps_and_empty_nodes(scene):
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(DuiitError, match="label map"):
        mrml.image_from_volume_node(label)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(DuiitError, match="no voxels"):
        mrml.image_from_volume_node(empty)
    with pytest.raises(DuiitError, match="2D"):
        mrml.volume_node_from_image(sitk.Image(4, 4, sitk.sitkFloat32))


def test_ct_window_preset(scene):
    import slicer
    node = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), dtype=np.float32))
    mrml.set_ct_window(node, "bone")
    display = node.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (1000.0, 400.0)
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    with pytest.raises(DuiitError, match="preset"):
        mrml.set_ct_window(node, "rainbow")


CLASSIFICATION = {"task": "classification", "label_names": ["none", "lesion", "oedema"],
                  "volume": {"label": "lesion", "probabilities": [0.2, 0.7, 0.1]},
                  "slices": [{"index": 0, "probabilities": [0.9, 0.05, 0.05]},
                             {"index": 3, "probabilities": [0.1, 0.3, 0.6]}]}
REGRESSION = {"task": "regression", "volume": {"value": 47.5},
              "slices": [{"index": 1, "value": 40.0}, {"index": 2, "value": 55.0}]}


def test_prediction_table_classification(scene):
    table_node = mrml.prediction_to_table(CLASSIFICATION)
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names == ["scope", "slice", "label", "p(none)", "p(lesion)", "p(oedema)"]
    assert table.GetNumberOfRows() == 3
    assert table.GetValueByName(0, "scope").ToString() == "volume"
    assert table.GetValueByName(0, "slice").ToInt() == -1
    assert table.GetValueByName(0, "label").ToString() == "lesion"
    assert table.GetValueByName(2, "slice").ToInt() == 3
    assert table.GetValueByName(2, "label").ToString() == "oedema"  # argmax of the slice's probabilities
    assert table.GetValueByName(1, "p(none)").ToDouble() == pytest.approx(0.9)
    assert mrml.prediction_from_table(table_node) == CLASSIFICATION


def test_prediction_table_regression_reuses_node(scene):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "mine")
    assert mrml.prediction_to_table(CLASSIFICATION, node) is node
    assert mrml.prediction_to_table(REGRESSION, node) is node  # a new task replaces the columns
    table = node.GetTable()
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == ["scope", "slice", "value"]
    assert [table.GetValueByName(r, "value").ToDouble() for r in range(3)] == [47.5, 40.0, 55.0]
    assert mrml.prediction_from_table(node) == REGRESSION


def test_prediction_table_refuses_inconsistent_predictions(scene):
    bad = {**CLASSIFICATION, "slices": [{"index": 0, "probabilities": [0.5, 0.5]}]}
    with pytest.raises(DuiitError, match="2 probabilities for 3 classes"):
        mrml.prediction_to_table(bad)
    with pytest.raises(DuiitError, match="task"):
        mrml.prediction_to_table({"task": "segmentation"})
