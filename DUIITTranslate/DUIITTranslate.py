import pathlib
from typing import Annotated, Optional

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DUIITTranslateLib.logic import TranslateLogicCore

#
# DUIITTranslate
#


class DUIITTranslate(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DUIIT Translate"
        self.parent.categories = ["DUIIT"]
        self.parent.dependencies = []
        self.parent.contributors = ["DUIIT developers"]
        self.parent.helpText = """
Translate an MR or PET volume into a CT-like volume (Hounsfield units, same geometry as the input) with a
DUIIT model bundle, and run the bundle's CT predictor on it (class probabilities or a regressed value,
for the whole volume and per slice). Bundles are made by the DUIIT Train module or the `duiit train`
command. See <a href="https://github.com/duiit/SlicerDUIIT#duiit-translate">the documentation</a>.
"""
        self.parent.acknowledgementText = """
DUIIT implements discriminative unpaired image-to-image translation for cross-modality data augmentation.
The module layout follows 3D Slicer's scripted module template.
"""


#
# DUIITTranslateParameterNode
#


@parameterNodeWrapper
class DUIITTranslateParameterNode:
    """The panel's state, saved in the scene.

    inputVolume - the MR or PET volume to translate.
    inputModality - "auto" (from the DICOM header) or the modality the user says the volume is.
    bundlePath - the .duiit model bundle.
    outputVolume - the CT-like volume (created when empty).
    errorMapVolume - optional cycle-error map.
    predictionTable - the predictor's outputs (created when empty).
    device - auto, cpu or cuda.
    views - how many mirrored / shifted views of each slice the translation averages (1, 2, 4 or 8).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputModality: Annotated[str, Choice(["auto", "MR", "PT"])] = "auto"
    bundlePath: pathlib.Path
    outputVolume: vtkMRMLScalarVolumeNode
    errorMapVolume: vtkMRMLScalarVolumeNode
    predictionTable: vtkMRMLTableNode
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    views: Annotated[str, Choice(["1", "2", "4", "8"])] = "1"


def pathIsSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


#
# DUIITTranslateWidget
#


class DUIITTranslateWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shownBundle = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DUIITTranslate.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DUIITTranslateLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.bundlePathLineEdit.connect("currentPathChanged(QString)", self.updateBundleInfo)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateBundleInfo)
        self.ui.inputModalityComboBox.connect("currentIndexChanged(int)", self.updateBundleInfo)
        self.ui.progressBar.hide()

        self.initializeParameterNode()
        self.updateDeviceInfo()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[DUIITTranslateParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node and node.inputVolume and pathIsSet(node.bundlePath):
            self.ui.applyButton.toolTip = "Translate the input and run the predictor"
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = "Select an input volume and a model bundle"
            self.ui.applyButton.enabled = False
        if self._parameterNode and self._parameterNode.predictionTable:
            self.ui.predictionTableView.setMRMLTableNode(self._parameterNode.predictionTable)

    def updateDeviceInfo(self, *args) -> None:
        """Say which device translation will use, and plainly when it is the CPU instead of a GPU."""
        from DUIITTrainLib.dependencies import device_summary, missing_packages
        if "torch" in missing_packages():
            self.ui.deviceInfoLabel.text = "PyTorch is not installed yet; it will be installed (after asking) on the first Apply."
            self.ui.deviceInfoLabel.styleSheet = ""
            return
        text, fallback = device_summary(self.ui.deviceComboBox.currentText)
        self.ui.deviceInfoLabel.text = ("CPU fall-back: " if fallback else "") + text
        self.ui.deviceInfoLabel.styleSheet = "color: #c05000; font-weight: bold" if fallback else ""

    def updateBundleInfo(self, *args) -> None:
        """Show what the chosen bundle does and whether it fits the input (header only; weights not read)."""
        path = self.ui.bundlePathLineEdit.currentPath
        self.ui.bundleInfoLabel.styleSheet = ""
        if not path:
            self.ui.bundleInfoLabel.text = "No model bundle chosen."
            return
        from duiit.errors import DuiitError
        try:
            from duiit.bundle import read_header
        except ImportError:
            self.ui.bundleInfoLabel.text = "The bundle is read after PyTorch is installed (first Apply)."
            return
        try:
            header = read_header(path)
        except DuiitError as exc:
            self.ui.bundleInfoLabel.text = str(exc)
            self.ui.bundleInfoLabel.styleSheet = "color: #c00000"
            return
        text = self.logic.describeBundle(header)
        node = self.ui.inputSelector.currentNode()
        style = ""
        if node is not None:
            try:
                self.logic.checkInput(header, node, self.ui.inputModalityComboBox.currentText)
            except DuiitError as exc:
                text += f"\n{exc}"
                style = "color: #c00000"
        self.ui.bundleInfoLabel.text = text
        self.ui.bundleInfoLabel.styleSheet = style

    def onApplyButton(self) -> None:
        from duiit.errors import DuiitError
        from DUIITTrainLib.dependencies import ensure_dependencies
        if not ensure_dependencies():
            self.ui.statusLabel.text = "DUIIT needs PyTorch; nothing was translated."
            return
        self.updateDeviceInfo()
        node = self._parameterNode
        self.ui.progressBar.show()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Translating..."
        self.ui.applyButton.enabled = False
        try:
            with slicer.util.tryWithErrorDisplay("Failed to translate the volume.", waitCursor=True):
                try:
                    result = self.logic.translate(
                        node.inputVolume, str(node.bundlePath), output_node=node.outputVolume,
                        error_map_node=node.errorMapVolume, table_node=node.predictionTable, device=node.device,
                        modality=node.inputModality, views=int(node.views), progress=self.onProgress)
                except DuiitError as exc:
                    # A refused input (wrong modality, wrong bundle) is a message for the user, not a crash.
                    self.ui.statusLabel.text = str(exc)
                    slicer.util.warningDisplay(str(exc), windowTitle="DUIIT Translate")
                    return
                node.outputVolume = result.output_node
                node.predictionTable = result.table_node
                if result.error_map_node is not None:
                    node.errorMapVolume = result.error_map_node
                self.ui.predictionTableView.setMRMLTableNode(result.table_node)
                self.logic.showSideBySide(node.inputVolume, result.output_node)
                self.ui.statusLabel.text = self.logic.describePrediction(result)
        finally:
            self.ui.progressBar.hide()
            self._checkCanApply()

    def onProgress(self, done, total) -> None:
        self.ui.progressBar.maximum = max(int(total), 1)
        self.ui.progressBar.value = int(done)
        slicer.app.processEvents()


#
# DUIITTranslateLogic
#


class DUIITTranslateLogic(ScriptedLoadableModuleLogic, TranslateLogicCore):
    """The translation (in DUIITTranslateLib.logic, qt-free) plus the parameter node and view helpers."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        TranslateLogicCore.__init__(self, database=None)

    def getParameterNode(self):
        return DUIITTranslateParameterNode(super().getParameterNode())

    def translate(self, *args, **kwargs):
        self.database = getattr(slicer, "dicomDatabase", None)
        return TranslateLogicCore.translate(self, *args, **kwargs)

    def checkInput(self, header, node, modality="auto"):
        from DUIITTranslateLib.logic import check_bundle_for_input
        self.database = getattr(slicer, "dicomDatabase", None)
        check_bundle_for_input(header, self.input_modality(node, modality))

    @staticmethod
    def describeBundle(header) -> str:
        task = header.get("task", "?")
        what = ("classes: " + ", ".join(header.get("label_names") or [])) if task == "classification" else "regression"
        return (f"{header.get('source_modality', '?')} -> {header.get('target_modality', 'CT')}, "
                f"method {header.get('method', '?')}, {task} ({what})")

    @staticmethod
    def describePrediction(result) -> str:
        prediction = result.prediction
        volume = prediction.get("volume", {})
        if prediction.get("task") == "classification":
            names = prediction.get("label_names", [])
            probabilities = volume.get("probabilities", [])
            best = max(range(len(probabilities)), key=probabilities.__getitem__) if probabilities else None
            summary = f"volume: {volume.get('label')}" + (f" (p = {probabilities[best]:.2f})" if best is not None else "")
            summary += f" over {len(names)} classes"
        else:
            summary = f"volume value: {volume.get('value', float('nan')):.4g}"
        return f"Done on {result.device} ({result.input_modality} input). {summary}; per-slice values in the table."

    @staticmethod
    def showSideBySide(inputNode, outputNode) -> None:
        """Input in the left (Red) view, CT-like output in the right (Yellow), both axial."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in (("Red", inputNode), ("Yellow", outputNode)):
            sliceWidget = layoutManager.sliceWidget(viewName)
            if sliceWidget is None:
                continue
            sliceLogic = sliceWidget.sliceLogic()
            composite = sliceLogic.GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            sliceLogic.GetSliceNode().SetOrientation("Axial")
            sliceLogic.FitSliceToAll()


#
# DUIITTranslateTest
#


class DUIITTranslateTest(ScriptedLoadableModuleTest):
    """Reload & Test: trains a tiny bundle on generated phantoms (a few seconds), then translates a small
    generated MR volume through the module logic and checks geometry, HU range and the prediction table."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        from DUIITTrainLib.dependencies import missing_packages
        missing = missing_packages()
        if missing:
            # No download inside a test: the panels install these after asking (first Apply or Train).
            self.delayDisplay(f"Skipped: DUIIT's Python packages are not installed ({', '.join(missing)})")
            return
        self.test_translate_generated_volume()
        self.test_wrong_modality_is_refused()

    def _bundle(self):
        if getattr(self, "_bundlePath", None):
            return self._bundlePath
        from DUIITTranslateLib.testing import train_tiny_bundle
        folder = slicer.util.tempDirectory("DUIITTranslateTest")
        self._bundlePath = train_tiny_bundle(folder, source="MR")
        return self._bundlePath

    def test_translate_generated_volume(self):
        self.delayDisplay("Training a tiny bundle and translating a generated MR volume")
        import numpy as np
        from DUIITTranslateLib.testing import add_phantom_volume
        bundle = self._bundle()
        inputNode = add_phantom_volume("MR", name="phantom MR")
        logic = DUIITTranslateLogic()
        result = logic.translate(inputNode, bundle, modality="MR", device="auto")
        inputMatrix, outputMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        inputNode.GetIJKToRASMatrix(inputMatrix)
        result.output_node.GetIJKToRASMatrix(outputMatrix)
        for r in range(4):
            for c in range(4):
                self.assertEqual(inputMatrix.GetElement(r, c), outputMatrix.GetElement(r, c))
        hu = slicer.util.arrayFromVolume(result.output_node)
        self.assertEqual(hu.shape, slicer.util.arrayFromVolume(inputNode).shape)
        self.assertGreaterEqual(float(hu.min()), -1024.5)
        self.assertLessEqual(float(hu.max()), 3071.5)
        self.assertTrue(np.isfinite(hu).all())
        self.assertGreater(result.table_node.GetNumberOfRows(), 1)
        logic.showSideBySide(inputNode, result.output_node)
        self.delayDisplay("Translate test passed")

    def test_wrong_modality_is_refused(self):
        from duiit.errors import DuiitError
        from DUIITTranslateLib.testing import add_phantom_volume
        bundle = self._bundle()
        inputNode = add_phantom_volume("PT", name="phantom PET")
        with self.assertRaises(DuiitError) as caught:
            DUIITTranslateLogic().translate(inputNode, bundle, modality="PT")
        self.assertIn("MR", str(caught.exception))
        self.delayDisplay("Wrong-modality test passed")
