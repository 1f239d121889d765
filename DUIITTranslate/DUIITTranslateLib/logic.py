"""What DUIIT Translate does besides widgets (no qt): input modality, bundle check, translation into nodes.

Runs inside Slicer and headless with the `slicer-core` wheel; the DICOM database is any object with
ctkDICOMDatabase's methods (slicer.dicomDatabase, or duiit.dicom_index.FolderDicomDatabase in tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from duiit import mrml
from duiit.errors import DuiitError

MODALITY_TAG = "0008,0060"
SOP_INSTANCE_UID_TAG = "0008,0018"
TRANSLATABLE = ("MR", "PT")
# Geometry of the translated image may differ from the input's only by rounding (it is computed on the
# input's grid); beyond this the output is refused rather than silently misplaced.
GEOMETRY_TOLERANCE = 1e-4
ERROR_MAP_COLORS = "vtkMRMLPETProceduralColorNodePET-Rainbow2"  # black where G is consistent, hot where not


@dataclass
class TranslateResult:
    output_node: object
    error_map_node: object
    table_node: object
    prediction: dict
    device: str
    input_modality: str
    normalisation: dict


def instance_uids(node) -> list:
    text = node.GetAttribute("DICOM.instanceUIDs") if node is not None else None
    return [uid for uid in (text or "").split() if uid]


def instance_file(node, database):
    """The file of the node's first DICOM instance in the database, or None."""
    uids = instance_uids(node)
    if not uids or database is None:
        return None
    for uid in uids[:3]:
        path = database.fileForInstance(uid) if hasattr(database, "fileForInstance") else _scan_for_instance(database, uid)
        if path:
            return path
    return None


def _scan_for_instance(database, uid):
    """For databases without fileForInstance: look the instance up through the series listing."""
    for patient in database.patients():
        for study in database.studiesForPatient(patient):
            for series in database.seriesForStudy(study):
                for path in database.filesForSeries(series):
                    value = database.fileValue(path, SOP_INSTANCE_UID_TAG) or _read_sop_instance_uid(path)
                    if value == uid:
                        return path
    return None


def _read_sop_instance_uid(path) -> str:
    import pydicom
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
    except Exception:  # pydicom raises many types for unreadable files
        return ""


def node_modality(node, database=None) -> str | None:
    """The modality of a volume node: its subject hierarchy DICOM attribute, else the DICOM database."""
    scene = node.GetScene() if node is not None else None
    # the existing subject hierarchy only (GetSubjectHierarchyNode would add one to a scene without)
    sh_node = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") if scene is not None else None
    if sh_node is not None:
        item = sh_node.GetItemByDataNode(node)
        name = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
        while item and item != sh_node.GetSceneItemID():
            value = sh_node.GetItemAttribute(item, name)
            if value:
                return value.strip().upper()
            item = sh_node.GetItemParent(item)
    path = instance_file(node, database)
    if path:
        value = database.fileValue(path, MODALITY_TAG)
        if value:
            return value.strip().upper()
    return None


def series_tags(node, database=None) -> dict | None:
    """The header tags duiit uses (PET SUV and modality) from the node's first DICOM file, if any."""
    path = instance_file(node, database)
    if not path:
        return None
    from duiit.dicom_series import read_tags
    try:
        return read_tags(path)
    except DuiitError:
        return None


def check_bundle_for_input(header: dict, modality: str | None) -> None:
    """Refuse a bundle whose source modality is not the input's, with a message saying what to do."""
    source = str(header.get("source_modality", "")).upper()
    if source not in TRANSLATABLE:
        raise DuiitError(f"the model translates {source or 'an unknown modality'}, not MR or PT")
    if modality is None:
        raise DuiitError("the input volume's modality is unknown (it was not loaded from DICOM): "
                         f"choose its modality in the panel (this model translates {source} to CT)")
    if modality != source:
        raise DuiitError(f"the model translates {source} to CT, but the input volume is {modality}; "
                         f"choose {_article(source)} {source} volume or a model trained on {modality}")


def _article(modality: str) -> str:
    return "an" if modality[:1] in "AEFHILMNORSX" else "a"


class TranslateLogicCore:
    """The translation itself; the module's Logic class adds ScriptedLoadableModuleLogic, the parameter node
    and the view layout on top."""

    def __init__(self, database=None):
        self.database = database

    def input_modality(self, node, override: str | None = None) -> str | None:
        if override and override.strip().upper() not in ("", "AUTO"):
            return override.strip().upper()
        return node_modality(node, self.database)

    def translate(self, input_node, bundle_path, output_node=None, error_map_node=None, table_node=None,
                  device: str = "auto", modality: str | None = None, with_error_map: bool | None = None,
                  views: int = 1, progress=None) -> TranslateResult:
        """Translate `input_node` with the bundle; outputs get the input's exact geometry (and parent transform).

        `modality`: "MR" / "PT" to override what the node's DICOM header says ("auto" or None: read it).
        The error map is made when `error_map_node` is given or `with_error_map` is true. `views`: how many
        mirrored / shifted views of each slice the translation averages (duiit/view_averaging.py).
        """
        if input_node is None:
            raise DuiitError("choose an input volume")
        if not bundle_path:
            raise DuiitError("choose a model bundle (.duiit file)")
        from duiit.bundle import load_bundle, read_header
        header = read_header(bundle_path)
        input_modality = self.input_modality(input_node, modality)
        check_bundle_for_input(header, input_modality)
        image = mrml.image_from_volume_node(input_node)
        bundle = load_bundle(bundle_path)
        from duiit.translate import translate_volume
        make_error_map = bool(with_error_map) or error_map_node is not None
        translation = translate_volume(bundle, image, device=device,
                                       series_tags=series_tags(input_node, self.database),
                                       with_error_map=make_error_map, views=views, progress=progress)
        name = f"{input_node.GetName()} CT-like"
        output_node = self._into_node(translation.ct, image, input_node, output_node, name)
        mrml.set_ct_window(output_node)
        output_node.SetAttribute("DUIIT.bundle", str(bundle_path))
        output_node.SetAttribute("DUIIT.sourceVolume", input_node.GetID())
        if make_error_map:
            error_map_node = self._into_node(translation.error_map, image, input_node, error_map_node,
                                             f"{input_node.GetName()} DUIIT error map")
            error_map_node.GetDisplayNode().SetAndObserveColorNodeID(ERROR_MAP_COLORS)
        table_node = mrml.prediction_to_table(translation.prediction, table_node)
        if table_node.GetName() in ("", "Table", "DUIIT prediction"):
            table_node.SetName(f"{input_node.GetName()} DUIIT prediction")
        return TranslateResult(output_node, error_map_node if make_error_map else None, table_node,
                               translation.prediction, translation.device, input_modality,
                               translation.normalisation)

    @staticmethod
    def _into_node(image, expected, input_node, node, name):
        """Write a translated image into a node and give it exactly the input's geometry.

        `expected` is the input as an image (the geometry the translation must have).
        """
        if image.GetSize() != expected.GetSize():
            raise DuiitError(f"the translated image has size {image.GetSize()}, not the input's {expected.GetSize()}")
        for what, got, want in (("spacing", image.GetSpacing(), expected.GetSpacing()),
                                ("origin", image.GetOrigin(), expected.GetOrigin()),
                                ("direction", image.GetDirection(), expected.GetDirection())):
            if not np.allclose(got, want, rtol=0, atol=GEOMETRY_TOLERANCE * max(1.0, float(np.abs(want).max()))):
                raise DuiitError(f"the translated image's {what} {got} differs from the input's {want}")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node = mrml.volume_node_from_image(image, node=node)
        node.CopyOrientation(input_node)  # bit-exact IJK-to-RAS of the input (removes any rounding)
        node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
        return node
