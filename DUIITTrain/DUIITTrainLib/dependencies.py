"""Python packages the DUIIT core needs inside Slicer, installed on first use after asking (both modules use this).

- torch comes from the PyTorch extension's PyTorchUtils, which picks the build (CUDA version or CPU) that
  fits the machine's driver.
- The small pure additions (safetensors, matplotlib) are pip-installed with a constraints file that pins
  the numpy, SimpleITK and pydicom Slicer ships, so nothing replaces Slicer's own packages.

`missing_packages()` is qt-free (tests call it); `ensure_dependencies()` shows dialogs, so only the panels call it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import tempfile

# import name -> pip requirement (torch is handled by PyTorchUtils, never pip-installed here)
PIP_PACKAGES = {"safetensors": "safetensors>=0.4", "matplotlib": "matplotlib>=3.5"}
# Distributions Slicer ships that an install must never replace.
PINNED = ("numpy", "SimpleITK", "pydicom")
MINIMUM_TORCH = "2.0"


def missing_packages() -> list:
    """Import names of the core's packages that are not installed (torch first)."""
    names = ["torch", *PIP_PACKAGES]
    return [name for name in names if importlib.util.find_spec(name) is None]


def constraints_file() -> str:
    """A pip constraints file pinning the installed versions of Slicer's own packages."""
    lines = []
    for name in PINNED:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    handle, path = tempfile.mkstemp(prefix="duiit-constraints-", suffix=".txt")
    with os.fdopen(handle, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def ensure_dependencies(ask: bool = True) -> bool:
    """Install what is missing, after asking; True when the core can be imported. Inside Slicer only."""
    import slicer
    missing = missing_packages()
    if not missing:
        return True
    if ask and not slicer.app.commandOptions().testingEnabled:
        if not slicer.util.confirmOkCancelDisplay(
                "DUIIT needs these Python packages, which are not installed yet: " + ", ".join(missing) + ".\n\n"
                "PyTorch is installed by the PyTorch extension (the right CUDA build for this computer's GPU, "
                "or the CPU build when there is none); the others with pip. Slicer's own numpy, SimpleITK and "
                "pydicom are kept.\n\nThis downloads several hundred MB (PyTorch with CUDA: about 2 GB) and "
                "can take minutes. Install now?",
                windowTitle="DUIIT: install Python packages"):
            return False
    if "torch" in missing:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay("DUIIT needs the PyTorch extension. Install 'PyTorch' from the Extensions "
                                     "Manager, restart Slicer and try again.")
            return False
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
        if torch is None:
            return False
    pip = [PIP_PACKAGES[name] for name in missing if name in PIP_PACKAGES]
    if pip:
        constraints = constraints_file()
        try:
            slicer.util.pip_install(pip + ["--constraint", constraints])
        finally:
            os.remove(constraints)
    still = missing_packages()
    if still:
        logging.error("DUIIT: still missing after installation: %s", ", ".join(still))
        slicer.util.errorDisplay("Could not install: " + ", ".join(still) + ". See the Python console for pip's output.")
        return False
    return True


def device_summary(choice: str = "auto") -> tuple:
    """(text, is_cpu_fallback) saying which device the core will use; needs torch (call after ensure)."""
    from duiit.device import resolve_device
    from duiit.errors import DuiitError
    try:
        device, message = resolve_device(choice)
    except DuiitError as exc:
        return str(exc), True
    fallback = device.type == "cpu" and (choice or "auto").lower() != "cpu"
    return message, fallback
