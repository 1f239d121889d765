"""The modules' in-Slicer unit tests (DUIIT*/Testing/Python, run by ctest inside Slicer) run here too,
headless on the slicer-core wheel, so they cannot rot unnoticed."""

import sys

import pytest
from slicer_helpers import ROOT, new_scene

for _module in ("DUIITTrain", "DUIITTranslate"):
    sys.path.insert(0, str(ROOT / _module / "Testing" / "Python"))

from DUIITTrainLibTest import DUIITTrainLibTest  # noqa: E402,F401  (collected by pytest)
from DUIITTranslateLibTest import DUIITTranslateLibTest  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _scene():
    new_scene()
