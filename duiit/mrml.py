"""MRML glue: the one core file that imports `slicer` (MRML only, never qt).

Converts between Slicer volume nodes (RAS world, IJK index order K,J,I in arrays) and SimpleITK images
(LPS world), and puts predictor outputs in a table node. Geometry is carried without arithmetic: spacing,
origin and axis directions are copied as they are, and RAS <-> LPS only negates the first two world
coordinates, so a node -> image -> node round trip reproduces the IJK-to-RAS matrix bit for bit.

Works inside Slicer and headless with the `slicer-core` wheel (real MRML, no qt).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .errors import DuiitError

# Window/level presets (HU), as in Slicer's Volumes module.
CT_WINDOWS = {
    "soft-tissue": (400.0, 40.0),
    "abdomen": (350.0, 40.0),
    "brain": (100.0, 50.0),
    "bone": (1000.0, 400.0),
    "lung": (1400.0, -500.0),
}
_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS


def _directions_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)], dtype=np.float64)


def ijk_to_ras(node) -> np.ndarray:
    """The node's own IJK-to-RAS matrix (4x4 numpy array; parent transforms are not applied)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def image_from_volume_node(node) -> sitk.Image:
    """A SimpleITK image (LPS) with the node's voxels (same pixel type) and exact geometry.

    The geometry is the node's own; a parent transform, if any, is not hardened into it (give the output
    node the same parent to keep them aligned).
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise DuiitError("the input is not a scalar volume node")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise DuiitError(f"{node.GetName()}: is a label map, not an image")
    image_data = node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise DuiitError(f"{node.GetName()}: the volume node has no voxels")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise DuiitError(f"{node.GetName()}: has {image_data.GetNumberOfScalarComponents()} values per voxel; "
                         "DUIIT needs a scalar (grey-level) volume")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)  # (K, J, I)
    image = sitk.GetImageFromArray(array)  # SimpleITK (x, y, z) = (I, J, K)
    directions = _directions_ras(node) * _FLIP[:, None]  # negate the R and A rows: RAS -> LPS
    image.SetSpacing([float(s) for s in node.GetSpacing()])
    image.SetOrigin([float(o) for o in np.array(node.GetOrigin(), dtype=np.float64) * _FLIP])
    image.SetDirection([float(v) for v in directions.ravel()])
    return image


def volume_node_from_image(image: sitk.Image, name: str | None = None, node=None):
    """Write `image` into `node` (a new vtkMRMLScalarVolumeNode in slicer.mrmlScene when None).

    Voxels keep their pixel type; spacing, origin and directions are set exactly (LPS -> RAS).
    """
    if image.GetDimension() != 3:
        raise DuiitError(f"a {image.GetDimension()}D image cannot go into a volume node; DUIIT needs 3D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DuiitError("a vector image cannot go into a scalar volume node")
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or "DUIIT volume")
    elif name:
        node.SetName(name)
    array = sitk.GetArrayFromImage(image)  # (z, y, x) = (K, J, I)
    slicer.util.updateVolumeFromArray(node, array)
    directions = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3) * _FLIP[:, None]
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(directions[r, c]))
    was_modifying = node.StartModify()
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*[float(s) for s in image.GetSpacing()])
    node.SetOrigin(*[float(o) for o in np.array(image.GetOrigin(), dtype=np.float64) * _FLIP])
    node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def set_ct_window(node, preset: str = "soft-tissue") -> None:
    """Show a (CT-like) volume in Hounsfield units with a fixed grey window instead of auto window/level."""
    if preset not in CT_WINDOWS:
        raise DuiitError(f"unknown CT window preset {preset!r} (one of {', '.join(CT_WINDOWS)})")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    window, level = CT_WINDOWS[preset]
    was_modifying = display.StartModify()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)
    display.EndModify(was_modifying)


def prediction_to_table(prediction: dict, table_node=None):
    """Fill a table node with a prediction dict from duiit.translate (one row for the volume, one per slice).

    Columns: scope ("volume" | "slice"), slice (index k of the image; -1 for the volume row), then
    classification: label (the most probable class name) and one probability column per class;
    regression: value.
    """
    task = prediction.get("task")
    if task not in ("classification", "regression"):
        raise DuiitError(f"the prediction has an unknown task {task!r}")
    if table_node is None:
        table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "DUIIT prediction")
    table = vtk.vtkTable()

    def column(array_class, name, values):
        array = array_class()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(value)
        table.AddColumn(array)

    slices = list(prediction.get("slices", []))
    volume = prediction.get("volume", {})
    column(vtk.vtkStringArray, "scope", ["volume"] + ["slice"] * len(slices))
    column(vtk.vtkIntArray, "slice", [-1] + [int(s["index"]) for s in slices])
    if task == "classification":
        names = [str(n) for n in prediction.get("label_names", [])]
        probabilities = [list(volume.get("probabilities", []))] + [list(s["probabilities"]) for s in slices]
        for row in probabilities:
            if len(row) != len(names):
                raise DuiitError(f"the prediction has {len(row)} probabilities for {len(names)} classes")
        labels = [volume.get("label") or names[int(np.argmax(probabilities[0]))]]
        labels += [names[int(np.argmax(row))] for row in probabilities[1:]]
        column(vtk.vtkStringArray, "label", labels)
        for k, name in enumerate(names):
            column(vtk.vtkDoubleArray, f"p({name})", [float(row[k]) for row in probabilities])
    else:
        column(vtk.vtkDoubleArray, "value", [float(volume["value"])] + [float(s["value"]) for s in slices])
    table_node.SetAndObserveTable(table)
    table_node.SetColumnDescription("scope", "volume: the whole volume (aggregated from slices); slice: one axial slice")
    table_node.SetColumnDescription("slice", "slice index k of the input volume (-1 for the volume row)")
    table_node.SetAttribute("DUIIT.task", task)
    return table_node


def prediction_from_table(table_node) -> dict:
    """The prediction dict back from a table written by prediction_to_table (for tests and scripts)."""
    table = table_node.GetTable()
    rows = table.GetNumberOfRows()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    task = table_node.GetAttribute("DUIIT.task") or ("regression" if "value" in names else "classification")

    def value(row, name):
        return table.GetValueByName(row, name).ToDouble()

    slices = []
    if task == "classification":
        classes = [n[2:-1] for n in names if n.startswith("p(") and n.endswith(")")]
        probs = [[value(r, f"p({c})") for c in classes] for r in range(rows)]
        for r in range(1, rows):
            slices.append({"index": table.GetValueByName(r, "slice").ToInt(), "probabilities": probs[r]})
        return {"task": task, "label_names": classes,
                "volume": {"label": table.GetValueByName(0, "label").ToString(), "probabilities": probs[0]},
                "slices": slices}
    for r in range(1, rows):
        slices.append({"index": table.GetValueByName(r, "slice").ToInt(), "value": value(r, "value")})
    return {"task": task, "volume": {"value": value(0, "value")}, "slices": slices}
