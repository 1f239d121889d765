"""The model bundle: one safetensors file holding the weights and a JSON header.

Loading parses JSON and raw tensors only; nothing in the file is ever executed. Pickled files
(torch.save, pickle) are recognised and refused before anything is deserialised.
"""

import json
import math
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import __version__
from .atomic import atomic_path
from .errors import DuiitError
from .normalisation import bundle_standard, ct_knots
from .networks import CycleTranslator, NetworkConfig, SlicePredictor, predictor_outputs

FORMAT = "duiit-bundle"
FORMAT_VERSION = 1
HEADER_KEY = "duiit"
MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_SIGNATURES = (b"PK\x03\x04", b"\x80")  # torch.save zip archive, raw pickle protocol 2+
# What a header may declare: far above any real model (the reference CycleGAN is 64 wide, 9 blocks,
# 256 px), far below sizes that would hang or exhaust memory while the networks are built.
NETWORK_BOUNDS = {"image_size": (16, 2048), "generator_width": (1, 512), "generator_blocks": (0, 64),
                  "generator_downsamplings": (0, 6), "discriminator_width": (1, 512), "discriminator_layers": (1, 8),
                  "predictor_width": (1, 512), "predictor_depth": (1, 10), "predictor_max_pool": (0, 1)}
DICT_FIELDS = ("network", "normalisation", "data_summary", "metrics", "training", "versions")


def versions() -> dict:
    return {"duiit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "SimpleITK": sitk.Version.VersionString(), "python": platform.python_version()}


@dataclass
class Bundle:
    path: Path
    header: dict
    tensors: dict

    @property
    def has_translator(self) -> bool:
        return any(k.startswith("translator.") for k in self.tensors)

    @property
    def network(self) -> NetworkConfig:
        return NetworkConfig.from_dict(self.header["network"])

    def translator(self) -> CycleTranslator:
        if not self.has_translator:
            raise DuiitError(f"{self.path}: trained with method {self.header.get('method')!r}, which has no "
                             "translator; use a duiit or cyclegan bundle to translate")
        return self._load(CycleTranslator(self.network), "translator.")

    def predictor(self) -> SlicePredictor:
        outputs = predictor_outputs(self.header["task"], len(self.header.get("label_names") or []))
        return self._load(SlicePredictor(self.network, outputs), "predictor.")

    def _load(self, module: torch.nn.Module, prefix: str) -> torch.nn.Module:
        state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise DuiitError(f"{self.path}: the header does not match the weights ({first})") from None
        return module.eval()


def save_bundle(path, header: dict, modules: dict) -> None:
    """`modules`: prefix -> nn.Module (e.g. {"translator": ..., "predictor": ...}); written atomically."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **header}
    tensors = {f"{prefix}.{k}": v.detach().cpu().contiguous()
               for prefix, module in modules.items() for k, v in module.state_dict().items()}
    data = save_safetensors(tensors, metadata={HEADER_KEY: json.dumps(header, default=_json_default)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def read_header(path) -> dict:
    """The header alone (cheap: the weights are not read)."""
    path, data = _read_start(path)
    length = struct.unpack("<Q", data[:8])[0]
    return _parse_header(path, data[8:8 + length])


def load_bundle(path) -> Bundle:
    path = Path(path)
    _read_start(path)
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    if 8 + length > len(data):
        raise DuiitError(f"{path}: truncated model bundle (header runs past the end of the file)")
    header = _parse_header(path, data[8:8 + length])
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise DuiitError(f"{path}: damaged or truncated model bundle ({str(exc).splitlines()[0][:120]})") from None
    bundle = Bundle(path, header, tensors)
    _check_tensors(bundle)  # names, shapes and dtypes, before any network is allocated
    bundle.predictor()  # header/weights consistency, checked up front
    if bundle.has_translator:
        bundle.translator()
    return bundle


def _check_tensors(bundle: Bundle) -> None:
    """The file's tensors are exactly those the header's networks have (built on the meta device, which
    allocates nothing), with their shapes, floating where the network's are, and finite."""
    header, path = bundle.header, bundle.path
    outputs = predictor_outputs(header["task"], len(header.get("label_names") or []))
    with torch.device("meta"):
        expected = {f"predictor.{k}": v for k, v in SlicePredictor(bundle.network, outputs).state_dict().items()}
        if bundle.has_translator:
            expected.update({f"translator.{k}": v for k, v in CycleTranslator(bundle.network).state_dict().items()})
    mismatch = "the header does not match the weights"
    unexpected = sorted(set(bundle.tensors) - set(expected))
    if unexpected:
        raise DuiitError(f"{path}: {mismatch} (unexpected tensor {unexpected[0][:80]!r})")
    for name, want in expected.items():
        have = bundle.tensors.get(name)
        if have is None:
            raise DuiitError(f"{path}: {mismatch} (no tensor {name!r})")
        if tuple(have.shape) != tuple(want.shape):
            raise DuiitError(f"{path}: {mismatch} ({name} has shape {list(have.shape)}, the header's network "
                             f"needs {list(want.shape)})")
        if have.dtype.is_floating_point != want.dtype.is_floating_point or have.dtype == torch.bool:
            raise DuiitError(f"{path}: {mismatch} ({name} is {str(have.dtype).replace('torch.', '')})")
        if have.dtype.is_floating_point and not bool(torch.isfinite(have).all()):
            raise DuiitError(f"{path}: damaged model bundle ({name} holds NaN or infinite weights)")


def _read_start(path):
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            start = handle.read(8)
            size = path.stat().st_size
            if len(start) == 8:
                length = struct.unpack("<Q", start)[0]
                if 0 < length <= MAX_HEADER_BYTES:
                    start += handle.read(length)
    except FileNotFoundError:
        raise DuiitError(f"{path}: no such model bundle") from None
    except IsADirectoryError:
        raise DuiitError(f"{path}: is a folder, not a model bundle") from None
    except OSError as exc:
        raise DuiitError(f"{path}: cannot read the model bundle ({exc.strerror})") from None
    # A safetensors header length whose low byte is 0x80 (1 in 32 bundles) starts like a pickle: look
    # at the JSON first. Nothing here is ever unpickled either way.
    safetensors_like = len(start) > 8 and 0 < struct.unpack("<Q", start[:8])[0] <= MAX_HEADER_BYTES \
        and start[8:9] == b"{"
    if start.startswith(PICKLE_SIGNATURES) and not safetensors_like:
        raise DuiitError(f"{path}: contains a pickled object (torch.save or pickle); refused, because loading it "
                         "could execute code. DUIIT bundles are safetensors files")
    if len(start) < 8 or size < 10:
        raise DuiitError(f"{path}: not a DUIIT model bundle (file too short)")
    length = struct.unpack("<Q", start[:8])[0]
    if not 0 < length <= MAX_HEADER_BYTES or start[8:9] != b"{":
        raise DuiitError(f"{path}: not a DUIIT model bundle (no safetensors header)")
    if 8 + length > size:
        raise DuiitError(f"{path}: truncated model bundle (header runs past the end of the file)")
    return path, start


def _parse_header(path, raw: bytes) -> dict:
    try:
        metadata = json.loads(raw.decode("utf-8")).get("__metadata__") or {}
        header = json.loads(metadata[HEADER_KEY])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise DuiitError(f"{path}: a safetensors file without a DUIIT header; not a DUIIT model bundle") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DuiitError(f"{path}: not a DUIIT model bundle (format is {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path}: not a DUIIT model bundle")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DuiitError(f"{path}: bundle format version {version} is newer than this DUIIT supports "
                         f"({FORMAT_VERSION}); update DUIIT")
    for key in ("task", "source_modality", "target_modality", "network", "normalisation"):
        if key not in header:
            raise DuiitError(f"{path}: bundle header lacks {key!r}")
    if header["task"] not in ("classification", "regression"):
        raise DuiitError(f"{path}: bundle task {header['task']!r} is unknown")
    _check_header_types(path, header)
    if header["task"] == "classification" and len(header.get("label_names") or []) < 2:
        raise DuiitError(f"{path}: classification bundle without at least two label names")
    return header


def _check_header_types(path, header: dict) -> None:
    """Fields the code relies on have the JSON types and ranges it expects (a stranger's file may not)."""
    if header["source_modality"] not in ("MR", "PT") or header["target_modality"] != "CT":
        raise DuiitError(f"{path}: bundle translates {str(header['source_modality'])[:20]!r} to "
                         f"{str(header['target_modality'])[:20]!r}; DUIIT translates MR or PT to CT")
    for key in DICT_FIELDS:
        if key in header and not isinstance(header[key], dict):
            raise DuiitError(f"{path}: bundle header field {key!r} is not a JSON object")
    names = header.get("label_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
                              or len(set(names)) != len(names)):
        raise DuiitError(f"{path}: bundle label_names must be a list of distinct, non-empty names")
    scale = header.get("regression_scale")
    if scale is not None and not (isinstance(scale, list) and len(scale) == 2 and all(
            type(v) in (int, float) and _finite(v) for v in scale)):
        raise DuiitError(f"{path}: bundle regression_scale must be two finite numbers")
    network = header["network"]
    for key, (low, high) in NETWORK_BOUNDS.items():
        value = network.get(key, getattr(NetworkConfig, key))
        if type(value) is not int or not low <= value <= high:
            raise DuiitError(f"{path}: bundle network {key} = {str(value)[:20]} is not a whole number from "
                             f"{low} to {high}")
    target = header["normalisation"].get("target")
    if not isinstance(target, dict):
        raise DuiitError(f"{path}: bundle header lacks its CT mapping (normalisation.target)")
    try:
        ct_knots(target)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DuiitError(f"{path}: bundle normalisation.target is not a usable CT mapping "
                         f"({str(exc)[:120] or type(exc).__name__})") from None
    try:
        bundle_standard(header["normalisation"])
    except ValueError as exc:
        raise DuiitError(f"{path}: bundle normalisation.source.standard is not usable ({exc})") from None
    config = NetworkConfig.from_dict(network)
    size, down = config.image_size, config.generator_downsamplings
    if size % 2 ** down or size >> down < 2 or size >> config.predictor_depth < 1:
        raise DuiitError(f"{path}: bundle network image_size {config.image_size} does not fit its "
                         f"{config.generator_downsamplings} downsamplings / {config.predictor_depth} predictor stages")


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False
