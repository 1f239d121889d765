"""duiit.mrml and DUIIT Translate's Lib inside Slicer: geometry round trip, prediction table, modality check."""

import unittest

import numpy as np
import slicer
import vtk


class DUIITTranslateLibTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_round_trip_keeps_ijk_to_ras(self):
        from DUIITTranslateLib.testing import add_phantom_volume

        from duiit import mrml
        node = add_phantom_volume("MR")
        back = mrml.volume_node_from_image(mrml.image_from_volume_node(node), name="back")
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(a)
        back.GetIJKToRASMatrix(b)
        for r in range(4):
            for c in range(4):
                self.assertEqual(a.GetElement(r, c), b.GetElement(r, c))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(back)))

    def test_prediction_table(self):
        from duiit import mrml
        prediction = {"task": "regression", "volume": {"value": 50.0},
                      "slices": [{"index": 0, "value": 45.0}, {"index": 1, "value": 55.0}]}
        table = mrml.prediction_to_table(prediction)
        self.assertEqual(table.GetNumberOfRows(), 3)
        self.assertEqual(mrml.prediction_from_table(table), prediction)

    def test_modality_check(self):
        from DUIITTranslateLib.logic import check_bundle_for_input

        from duiit.errors import DuiitError
        check_bundle_for_input({"source_modality": "PT"}, "PT")
        with self.assertRaises(DuiitError):
            check_bundle_for_input({"source_modality": "PT"}, "MR")
        with self.assertRaises(DuiitError):
            check_bundle_for_input({"source_modality": "MR"}, None)
