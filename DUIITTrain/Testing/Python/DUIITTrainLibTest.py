"""DUIIT Train's qt-free Lib inside Slicer: labels, worker protocol parsing, loss plot nodes (no training)."""

import unittest

import slicer


class DUIITTrainLibTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_labels(self):
        from DUIITTrainLib import labels
        self.assertEqual(labels.parse_age("045Y"), 45.0)
        self.assertAlmostEqual(labels.parse_age("010W"), 70 / 365.25)
        self.assertEqual(labels.dicom_tag("PatientAge"), "0010,1010")
        self.assertEqual(labels.dicom_tag("(0010,1010)"), "0010,1010")
        self.assertEqual(labels.label_from_tag_value("PatientAge", "006M", "regression"), "0.5")
        self.assertEqual(labels.check_labels(["a", "", "b"], "classification"), ["1 selected series have no label"])
        self.assertEqual(len(labels.check_labels(["7", "old"], "regression")), 1)

    def test_monitor_and_plot(self):
        from DUIITTrainLib.plot import LossPlot
        from DUIITTrainLib.worker import TrainingMonitor, parse_line
        monitor, plot = TrainingMonitor(), LossPlot()
        lines = ['{"event": "start", "device": "cpu", "total_iterations": 4}',
                 '{"event": "progress", "phase": "joint", "iteration": 1, "total": 4, "step": 1, "total_steps": 4, '
                 '"losses": {"gan": 1.5, "cycle": 0.8}, "eta_s": 3.0, "elapsed_s": 1.0}',
                 '{"event": "progress", "phase": "joint", "iteration": 2, "total": 4, "step": 2, "total_steps": 4, '
                 '"losses": {"gan": 1.2, "cycle": 0.7, "task": 0.6}, "eta_s": 2.0, "elapsed_s": 2.0}',
                 '{"event": "cancelled", "checkpoint": "model.duiit.ckpt"}']
        for line in lines:
            event = parse_line(line)
            monitor.handle(event)
            plot.add(event)
        self.assertEqual(monitor.state, "cancelled")
        self.assertEqual(monitor.checkpoint, "model.duiit.ckpt")
        self.assertEqual(plot.loss_names(), ["gan", "cycle", "task"])
        self.assertEqual(plot.values("gan"), [1.5, 1.2])
        self.assertEqual(plot.chart_node.GetNumberOfPlotSeriesNodes(), 3)
