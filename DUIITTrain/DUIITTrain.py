import json
import pathlib
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLPlotChartNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DUIITTrainLib import labels as labelsLib
from DUIITTrainLib import logic as trainLib
from DUIITTrainLib.worker import TrainingMonitor, TrainingWorker, WorkerProcess

LABEL_SOURCES = ["typed in the table", "from a CSV file", "from a DICOM tag"]
POLL_INTERVAL_MS = 500
CANCEL_GRACE_MS = 60000
COLUMN_USE, COLUMN_PATIENT, COLUMN_STUDY, COLUMN_SERIES, COLUMN_MODALITY, COLUMN_IMAGES, COLUMN_LABEL = range(7)

#
# DUIITTrain
#


class DUIITTrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DUIIT Train"
        self.parent.categories = ["DUIIT"]
        self.parent.dependencies = []
        self.parent.contributors = ["DUIIT developers"]
        self.parent.helpText = """
Train a CT predictor on few labelled CTs plus more labelled MR or PET series, which a translator (trained
jointly with the predictor and guided by it) turns into CT-like images. Pick the series from Slicer's DICOM
database, give them labels (CT series left without one train the translator only: duiit and cyclegan), and
train in a background process with a live loss plot; Cancel keeps a
checkpoint that Resume continues from. The result is a model bundle for DUIIT Translate, a report, and an
exportable translated cohort. See <a href="https://github.com/duiit/SlicerDUIIT#duiit-train">the documentation</a>.
"""
        self.parent.acknowledgementText = """
DUIIT implements discriminative unpaired image-to-image translation for cross-modality data augmentation.
The module layout follows 3D Slicer's scripted module template.
"""


#
# DUIITTrainParameterNode
#


@parameterNodeWrapper
class DUIITTrainParameterNode:
    """The panel's state, saved in the scene.

    seriesSelection - JSON {SeriesInstanceUID: {"use": bool, "label": str}} of the series table.
    lossTable, lossChart - the live loss plot of the last training run.
    """

    targetModality: Annotated[str, Choice(list(trainLib.TARGET_MODALITIES))] = "CT"
    sourceModality: Annotated[str, Choice(list(trainLib.SOURCE_MODALITIES))] = "MR"
    labelSource: Annotated[str, Choice(LABEL_SOURCES)] = LABEL_SOURCES[0]
    labelCsvPath: pathlib.Path
    labelTag: str = "PatientAge"
    task: Annotated[str, Choice(list(trainLib.TASKS))] = "classification"
    method: Annotated[str, Choice(list(trainLib.METHODS))] = "duiit"
    iterations: Annotated[int, WithinRange(1, 1000000)] = 2000
    imageSize: Annotated[int, WithinRange(16, 1024)] = 128
    preset: Annotated[str, Choice(list(trainLib.PRESETS))] = "small"
    headDepth: Annotated[int, WithinRange(0, trainLib.MAX_HEAD_DEPTH)] = 0
    depthFromInput: bool = False
    mrStandard: bool = True
    predictorAugment: bool = False
    guidePredictor: Annotated[str, Choice(list(trainLib.GUIDE_PREDICTORS))] = "joint"
    guideClasses: str = ""
    guidePretrain: Annotated[int, WithinRange(0, 1000000)] = 0
    guideInvertedLesions: bool = False
    guideErasedLesions: bool = False
    predictorErasedLesions: bool = False
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    outputFolder: pathlib.Path
    seriesSelection: str = ""
    lossTable: vtkMRMLTableNode
    lossChart: vtkMRMLPlotChartNode


def pathIsSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


#
# DUIITTrainWidget
#


class DUIITTrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._filling = False
        self.series = []  # SeriesInfo shown in the table, by row order of insertion
        self.worker = None
        self.job = None  # "train" | "export"
        self.monitor = None
        self.plot = None
        self.lastBundle = None
        self.lastReport = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DUIITTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DUIITTrainLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        table = self.ui.seriesTableWidget
        table.horizontalHeader().setSectionResizeMode(qt.QHeaderView.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.connect("itemChanged(QTableWidgetItem*)", self.onSeriesItemChanged)

        self.ui.refreshSeriesButton.connect("clicked(bool)", self.refreshSeries)
        self.ui.selectAllButton.connect("clicked(bool)", lambda: self.setAllTicked(True))
        self.ui.selectNoneButton.connect("clicked(bool)", lambda: self.setAllTicked(False))
        self.ui.sourceModalityComboBox.connect("currentIndexChanged(int)", self.refreshSeries)
        self.ui.fillLabelsButton.connect("clicked(bool)", self.onFillLabels)
        self.ui.labelSourceComboBox.connect("currentIndexChanged(int)", self.updateLabelWidgets)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.loadExamplesButton.connect("clicked(bool)", self.onLoadExamples)

        # The worker's output is read on a timer: the GUI never waits for the worker.
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPollWorker)

        self.initializeParameterNode()
        self.updateLabelWidgets()
        self.updateDeviceInfo()
        self.refreshSeries()

    def cleanup(self) -> None:
        self.removeObservers()
        self.timer.stop()
        if self.worker is not None and self.worker.is_running:
            # Slicer is closing: let the worker checkpoint and stop rather than run on unseen.
            self.worker.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.plot = None
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[DUIITTrainParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.applySelectionToTable()
            self.updateButtons()

    # -- series table ----------------------------------------------------------------------------------

    def database(self):
        database = getattr(slicer, "dicomDatabase", None)
        if database is None or not database.isOpen:
            return None
        return database

    def refreshSeries(self, *args) -> None:
        database = self.database()
        if database is None:
            self.series = []
            self.fillTable()
            self.ui.seriesCountLabel.text = "The DICOM database is not open: import the series in the DICOM module first."
            return
        # Read the combo boxes: this slot may run before the parameter node hears of the change.
        target = self.ui.targetModalityComboBox.currentText or "CT"
        source = self.ui.sourceModalityComboBox.currentText or "MR"
        with slicer.util.tryWithErrorDisplay("Failed to list the DICOM series.", waitCursor=True):
            self.series = self.logic.listSeries(database, target, source)
            self.fillTable()

    def selection(self) -> dict:
        try:
            return json.loads(self._parameterNode.seriesSelection or "{}") if self._parameterNode else {}
        except ValueError:
            return {}

    def fillTable(self) -> None:
        table = self.ui.seriesTableWidget
        chosen = self.selection()
        self._filling = True
        table.setSortingEnabled(False)
        table.setRowCount(len(self.series))
        for row, series in enumerate(self.series):
            state = chosen.get(series.series_uid, {})
            use = qt.QTableWidgetItem()
            use.setFlags(qt.Qt.ItemIsUserCheckable | qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
            use.setCheckState(qt.Qt.Checked if state.get("use") else qt.Qt.Unchecked)
            use.setData(qt.Qt.UserRole, series.series_uid)
            table.setItem(row, COLUMN_USE, use)
            texts = {
                COLUMN_PATIENT: f"{series.patient_name} ({series.patient_id})" if series.patient_name else series.patient_id,
                COLUMN_STUDY: series.study_description or series.study_uid,
                COLUMN_SERIES: series.series_description or series.series_uid,
                COLUMN_MODALITY: series.modality,
                COLUMN_IMAGES: str(series.n_images),
            }
            for column, text in texts.items():
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
                item.setToolTip(series.series_uid)
                table.setItem(row, column, item)
            label = qt.QTableWidgetItem(state.get("label", ""))
            label.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEditable)
            table.setItem(row, COLUMN_LABEL, label)
        table.setSortingEnabled(True)
        self._filling = False
        self.updateSeriesCount()

    def applySelectionToTable(self) -> None:
        if self.series:
            self.fillTable()

    def tableRows(self) -> list:
        """[(SeriesInfo, ticked, label)] in the table's current order."""
        byUid = {s.series_uid: s for s in self.series}
        table = self.ui.seriesTableWidget
        rows = []
        for row in range(table.rowCount):
            use = table.item(row, COLUMN_USE)
            label = table.item(row, COLUMN_LABEL)
            if use is None:
                continue
            series = byUid.get(use.data(qt.Qt.UserRole))
            if series is not None:
                rows.append((series, use.checkState() == qt.Qt.Checked, label.text().strip() if label else ""))
        return rows

    def onSeriesItemChanged(self, item) -> None:
        if self._filling or self._parameterNode is None:
            return
        chosen = self.selection()
        for series, use, label in self.tableRows():
            chosen[series.series_uid] = {"use": use, "label": label}
        self._parameterNode.seriesSelection = json.dumps(chosen, sort_keys=True)
        self.updateSeriesCount()

    def setAllTicked(self, ticked: bool) -> None:
        table = self.ui.seriesTableWidget
        for row in range(table.rowCount):
            item = table.item(row, COLUMN_USE)
            if item is not None:
                item.setCheckState(qt.Qt.Checked if ticked else qt.Qt.Unchecked)

    def selected(self) -> list:
        return [(series, label) for series, use, label in self.tableRows() if use]

    def updateSeriesCount(self) -> None:
        counts = {}
        for series in self.series:
            counts[series.modality] = counts.get(series.modality, 0) + 1
        ticked = self.selected()
        tickedCounts = {}
        for series, _ in ticked:
            tickedCounts[series.modality] = tickedCounts.get(series.modality, 0) + 1
        listed = ", ".join(f"{n} {m}" for m, n in sorted(counts.items())) or "none"
        chosen = ", ".join(f"{n} {m}" for m, n in sorted(tickedCounts.items())) or "none"
        self.ui.seriesCountLabel.text = f"Series listed: {listed}. Ticked: {chosen}."
        self.updateButtons()

    # -- labels ----------------------------------------------------------------------------------------

    def updateLabelWidgets(self, *args) -> None:
        source = self.ui.labelSourceComboBox.currentText
        csv = source == LABEL_SOURCES[1]
        tag = source == LABEL_SOURCES[2]
        self.ui.labelCsvLabel.setVisible(csv)
        self.ui.labelCsvPathLineEdit.setVisible(csv)
        self.ui.labelTagLabel.setVisible(tag)
        self.ui.labelTagLineEdit.setVisible(tag)
        self.ui.fillLabelsButton.setVisible(csv or tag)

    def onFillLabels(self) -> None:
        from duiit.errors import DuiitError
        node = self._parameterNode
        ticked = [series for series, _ in self.selected()]
        if not ticked:
            slicer.util.warningDisplay("Tick the series whose labels should be filled.", windowTitle="DUIIT Train")
            return
        try:
            if node.labelSource == LABEL_SOURCES[1]:
                if not pathIsSet(node.labelCsvPath):
                    raise DuiitError("choose a label CSV file")
                found = self.logic.labelsFromCsv(str(node.labelCsvPath), ticked)
            else:
                database = self.database()
                if database is None:
                    raise DuiitError("the DICOM database is not open")
                found = self.logic.labelsFromDicomTag(database, ticked, node.labelTag, node.task)
        except DuiitError as exc:
            slicer.util.warningDisplay(str(exc), windowTitle="DUIIT Train: labels")
            return
        table = self.ui.seriesTableWidget
        filled = 0
        for row in range(table.rowCount):
            uid = table.item(row, COLUMN_USE).data(qt.Qt.UserRole)
            if found.get(uid):
                table.item(row, COLUMN_LABEL).setText(found[uid])
                filled += 1
        missing = len(ticked) - filled
        self.ui.statusLabel.text = f"Filled {filled} label(s)" + (f"; {missing} ticked series have none." if missing else ".")

    # -- device ----------------------------------------------------------------------------------------

    def updateDeviceInfo(self, *args) -> None:
        from DUIITTrainLib.dependencies import device_summary, missing_packages
        if "torch" in missing_packages():
            self.ui.deviceInfoLabel.text = "PyTorch is not installed yet; it will be installed (after asking) when you press Train."
            self.ui.deviceInfoLabel.styleSheet = ""
            return
        text, fallback = device_summary(self.ui.deviceComboBox.currentText)
        if fallback:
            text = "CPU fall-back: " + text + ". Use the small network size and 64-128 px images."
        self.ui.deviceInfoLabel.text = text
        self.ui.deviceInfoLabel.styleSheet = "color: #c05000; font-weight: bold" if fallback else ""

    # -- training --------------------------------------------------------------------------------------

    def settings(self) -> trainLib.TrainSettings:
        node = self._parameterNode
        return trainLib.TrainSettings(
            output_folder=str(node.outputFolder) if pathIsSet(node.outputFolder) else "",
            source_modality=node.sourceModality, target_modality=node.targetModality, task=node.task,
            method=node.method, iterations=node.iterations, image_size=node.imageSize, preset=node.preset,
            head_depth=node.headDepth, depth_from_input=node.depthFromInput, mr_standard=node.mrStandard,
            predictor_augment=node.predictorAugment, guide_predictor=node.guidePredictor,
            guide_classes=node.guideClasses, guide_pretrain=node.guidePretrain,
            guide_inverted_lesions=node.guideInvertedLesions, guide_erased_lesions=node.guideErasedLesions,
            predictor_erased_lesions=node.predictorErasedLesions, device=node.device)

    def updateButtons(self, caller=None, event=None) -> None:
        running = self.worker is not None and self.worker.is_running
        node = self._parameterNode
        haveOutput = node is not None and pathIsSet(node.outputFolder)
        self.ui.trainButton.enabled = not running and haveOutput and bool(self.selected())
        self.ui.trainButton.toolTip = ("Write the manifest and start training in a worker process." if haveOutput
                                       else "Choose an output folder and tick series first.")
        self.ui.cancelButton.enabled = running
        self.ui.resumeButton.enabled = not running and haveOutput and trainLib.can_resume(self.settings())
        bundle = self.lastBundle or (self.settings().model if haveOutput else None)
        haveBundle = bundle is not None and pathlib.Path(bundle).is_file()
        self.ui.exportButton.enabled = not running and haveBundle
        self.ui.openReportButton.enabled = trainLib.report_page(self.lastReport or (self.settings().report if haveOutput else None)) is not None
        self.ui.loadExamplesButton.enabled = not running and haveOutput and bool(trainLib.exported_volumes(self.settings().cohort, 1))

    def onTrain(self) -> None:
        from duiit.errors import DuiitError
        settings = self.settings()
        resume = False
        if trainLib.can_resume(settings):
            resume = slicer.util.confirmYesNoDisplay(
                "An unfinished training run has a checkpoint in this output folder. Resume it?\n\n"
                "Yes: continue from the checkpoint. No: start over (the checkpoint is replaced).",
                windowTitle="DUIIT Train")
        if not resume and settings.model.exists() and not slicer.util.confirmOkCancelDisplay(
                f"{settings.model} exists; it will be replaced when the new training finishes.",
                windowTitle="DUIIT Train"):
            return
        try:
            self.logic.writeManifest(self.selected(), settings)
        except DuiitError as exc:
            slicer.util.warningDisplay(str(exc), windowTitle="DUIIT Train")
            return
        self.startTraining(resume)

    def onResume(self) -> None:
        self.startTraining(resume=True)

    def startTraining(self, resume: bool) -> None:
        from DUIITTrainLib.dependencies import ensure_dependencies
        if not ensure_dependencies():
            self.ui.statusLabel.text = "DUIIT needs PyTorch to train; nothing was started."
            return
        self.updateDeviceInfo()
        settings = self.settings()
        if self.plot is None:
            self.plot = self.logic.lossPlot(self._parameterNode)
        if not resume:
            self.plot.reset()
        slicer.modules.plots.logic().ShowChartInLayout(self.plot.chart_node)
        self.lastBundle = None
        self.lastReport = None
        worker = TrainingWorker()  # Slicer's Python (DUIITTrainLib.worker.slicer_python)
        self.startJob("train", worker, lambda: worker.start(trainLib.train_arguments(settings, resume=resume)))
        self.ui.statusLabel.text = ("Resuming" if resume else "Starting") + " training in a worker process..."

    def startJob(self, job, worker, start) -> None:
        self.ui.logTextEdit.clear()
        try:
            start()
        except OSError as exc:
            slicer.util.errorDisplay(f"Could not start the worker process: {exc}")
            return
        self.worker, self.job, self.monitor = worker, job, TrainingMonitor()
        self.monitor.state = "running"
        # `duiit export` reports no progress events: a busy bar; training: per mille of all phases
        self.ui.progressBar.setRange(0, 1000 if job == "train" else 0)
        self.ui.progressBar.value = 0
        self.timer.start()
        self.updateButtons()

    def onPollWorker(self) -> None:
        if self.worker is None:
            self.timer.stop()
            return
        for event in self.worker.poll():
            self.monitor.handle(event)
            if event.get("event") == "log":
                self.ui.logTextEdit.appendPlainText(event.get("message", ""))
            elif event.get("event") == "start" and event.get("device_message"):
                self.ui.logTextEdit.appendPlainText(event["device_message"])
            if self.plot is not None and self.job == "train":
                self.plot.add(event)
        if self.job == "train":
            self.ui.progressBar.value = int(round(self.monitor.fraction * 1000))
        self.ui.statusLabel.text = self.monitor.status_text()
        if self.monitor.finished and not self.worker.is_running:
            self.timer.stop()
            self.onJobFinished()

    def onJobFinished(self) -> None:
        monitor, job = self.monitor, self.job
        self.worker = None
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.value = 1000 if monitor.state == "done" else self.ui.progressBar.value
        if job == "train":
            if monitor.state == "done":
                settings = self.settings()
                self.lastBundle = monitor.bundle or str(settings.model)
                self.lastReport = monitor.report or str(settings.report)
                self.ui.resultsLabel.text = self.logic.describeResults(monitor)
                self.ui.resultsCollapsibleButton.collapsed = False
                self.onOpenReport()
            elif monitor.state == "cancelled":
                self.ui.statusLabel.text = monitor.message
            else:
                slicer.util.errorDisplay(f"Training failed: {monitor.message}", windowTitle="DUIIT Train",
                                         detailedText="\n".join(list(self.workerLog())))
        elif job == "export":
            cohort = self.settings().cohort
            if monitor.state == "done":
                self.ui.statusLabel.text = f"Exported the translated cohort to {cohort}."
            else:
                slicer.util.errorDisplay(f"Export failed: {monitor.message}", windowTitle="DUIIT Train")
        self.updateButtons()

    def workerLog(self):
        return self.monitor.log if self.monitor is not None else []

    def onCancel(self) -> None:
        if self.worker is None or not self.worker.cancel():
            return
        self.ui.statusLabel.text = "Cancelling: the worker saves a checkpoint, then stops..."
        worker = self.worker
        qt.QTimer.singleShot(CANCEL_GRACE_MS, lambda: self.killIfStillRunning(worker))

    def killIfStillRunning(self, worker) -> None:
        if worker.is_running:
            worker.kill()
            self.ui.statusLabel.text = "The worker did not stop in time and was killed; the last saved checkpoint is kept."

    # -- results ---------------------------------------------------------------------------------------

    def onOpenReport(self) -> None:
        page = trainLib.report_page(self.lastReport or self.settings().report)
        if page is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(page)))

    def onExport(self) -> None:
        settings = self.settings()
        if not settings.manifest.exists():
            slicer.util.warningDisplay("No manifest in the output folder: train first.", windowTitle="DUIIT Train")
            return
        worker = WorkerProcess()
        args = trainLib.export_arguments(settings, self.lastBundle) + ["--device", settings.device]
        self.startJob("export", worker, lambda: worker.start_command("export", args))
        self.ui.statusLabel.text = f"Exporting the translated cohort to {settings.cohort}..."

    def onLoadExamples(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the translated examples.", waitCursor=True):
            nodes = self.logic.loadExamples(self.settings().cohort)
            if nodes:
                slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)
            self.ui.statusLabel.text = f"Loaded {len(nodes)} translated example(s)."


#
# DUIITTrainLogic
#


class DUIITTrainLogic(ScriptedLoadableModuleLogic):
    """Thin: the work is in DUIITTrainLib (qt-free) and the duiit core; no qt here."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DUIITTrainParameterNode(super().getParameterNode())

    @staticmethod
    def listSeries(database, target, source):
        return trainLib.list_candidate_series(database, target, source)

    @staticmethod
    def labelsFromCsv(path, seriesList) -> dict:
        table = labelsLib.read_label_csv(path)
        return {s.series_uid: table.lookup(s) for s in seriesList if table.lookup(s)}

    @staticmethod
    def labelsFromDicomTag(database, seriesList, tag, task) -> dict:
        return labelsLib.labels_from_dicom_tag(database, seriesList, tag, task)

    @staticmethod
    def writeManifest(selected, settings):
        return trainLib.write_manifest(selected, settings)

    @staticmethod
    def lossPlot(parameterNode):
        from DUIITTrainLib.plot import LossPlot
        plot = LossPlot()
        if parameterNode is not None:
            parameterNode.lossTable = plot.table_node
            parameterNode.lossChart = plot.chart_node
        return plot

    @staticmethod
    def describeResults(monitor) -> str:
        lines = [f"Model bundle: {monitor.bundle}"]
        if monitor.report:
            lines.append(f"Report: {monitor.report}")
        for name, value in list((monitor.metrics or {}).items())[:8]:
            if isinstance(value, (int, float)):
                lines.append(f"{name}: {value:.4g}")
        return "\n".join(lines)

    @staticmethod
    def loadExamples(cohortFolder, limit=3) -> list:
        from duiit import mrml
        from duiit.volume_io import read_volume
        nodes = []
        for path in trainLib.exported_volumes(cohortFolder, limit):
            node = mrml.volume_node_from_image(read_volume(path), name=f"{pathlib.Path(path).name} (translated)")
            mrml.set_ct_window(node)
            nodes.append(node)
        return nodes


#
# DUIITTrainTest
#


class DUIITTrainTest(ScriptedLoadableModuleTest):
    """Reload & Test: the label helpers, then a real worker run on generated phantoms that is cancelled
    (checkpoint kept, no bundle) and resumed to the end (bundle and report written)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_labels()
        from DUIITTrainLib.dependencies import missing_packages
        missing = missing_packages()
        if missing:
            # No download inside a test: the panels install these after asking (first Train or Apply).
            self.delayDisplay(f"Worker test skipped: DUIIT's Python packages are not installed ({', '.join(missing)})")
            return
        self.test_worker_cancel_and_resume()

    def test_labels(self):
        self.assertEqual(labelsLib.parse_age("045Y"), 45.0)
        self.assertEqual(labelsLib.parse_age("006M"), 0.5)
        self.assertEqual(labelsLib.dicom_tag("PatientAge"), "0010,1010")
        self.delayDisplay("Label helpers passed")

    def test_worker_cancel_and_resume(self):
        import time
        from DUIITTrainLib.plot import LossPlot
        from DUIITTranslateLib.testing import tiny_train_arguments, write_tiny_cohort
        folder = pathlib.Path(slicer.util.tempDirectory("DUIITTrainTest"))
        manifest = write_tiny_cohort(folder / "data")
        output = folder / "model.duiit"
        args = tiny_train_arguments(manifest, output, extra=["--iterations", "20", "--checkpoint-every", "1000"])
        plot = LossPlot()
        slicer.modules.plots.logic().ShowChartInLayout(plot.chart_node)
        monitor = TrainingMonitor()
        worker = TrainingWorker()
        worker.start(args)
        deadline = time.time() + 180
        while time.time() < deadline and not plot.loss_names() and worker.is_running:
            for event in worker.poll():
                monitor.handle(event)
                plot.add(event)
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertTrue(plot.loss_names(), f"no progress event from the worker: {list(monitor.log)[-5:]}")
        self.assertTrue(worker.cancel())
        worker.wait(120)
        self.assertFalse(worker.is_running)
        for event in worker.poll():
            monitor.handle(event)
        self.assertEqual(monitor.state, "cancelled")
        self.assertTrue(pathlib.Path(str(output) + ".ckpt").is_file())
        self.assertFalse(output.exists())
        self.delayDisplay("Cancel kept the checkpoint and left no bundle; resuming to the end")
        resumed = TrainingWorker()
        resumed.start(args + ["--resume"])
        self.assertEqual(resumed.wait(300), 0)
        self.assertTrue(output.is_file())
        self.delayDisplay("Train test passed")
