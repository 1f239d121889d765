"""Shared helpers for the headless Slicer tests (real MRML from the `slicer-core` wheel, no qt).

`new_scene()` builds what Slicer's application would: a vtkMRMLScene with an application logic, the
Colors logic (default color nodes, needed by volume display nodes) and the Volumes logic, and sets
`slicer.mrmlScene` so that slicer.util and duiit.mrml find it.
"""

import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The modules' qt-free Lib packages, importable as inside Slicer (where the module folders are on sys.path).
for module_dir in ("DUIITTrain", "DUIITTranslate"):
    if str(ROOT / module_dir) not in sys.path:
        sys.path.insert(0, str(ROOT / module_dir))


_SLICER_HOME = None


def _empty_slicer_home() -> Path:
    """One folder per test process with an empty color-file folder: the built-in color tables suffice (this only
    silences missing-folder messages). TemporaryDirectory removes it when the process ends."""
    global _SLICER_HOME
    if _SLICER_HOME is None:
        _SLICER_HOME = tempfile.TemporaryDirectory(prefix="duiit-slicer-home-")
        (Path(_SLICER_HOME.name) / "share" / "ColorFiles").mkdir(parents=True)
    return Path(_SLICER_HOME.name)


def new_scene():
    import slicer
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.SetHomeDirectory(str(_empty_slicer_home()))
    app_logic.SetShareDirectory("share")
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app_logic)
    volumes.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Volumes", volumes)
    slicer.mrmlScene = scene
    # keep the logics alive as long as the scene
    scene._duiit_logics = (app_logic, colors, volumes)
    return scene


@pytest.fixture
def scene():
    """A fresh MRML scene as `slicer.mrmlScene` for one test."""
    scene = new_scene()
    yield scene
    scene.Clear(True)
