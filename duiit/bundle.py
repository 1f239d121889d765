"""The model bundle: one safetensors file holding the weights and a JSON header.

Loading parses JSON and raw tensors only; nothing in the file is ever executed. Pickled files
(torch.save, pickle) are recognised and refused before anything is deserialised.
"""

import json
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
from .networks import CycleTranslator, NetworkConfig, SlicePredictor, predictor_outputs

FORMAT = "duiit-bundle"
FORMAT_VERSION = 1
HEADER_KEY = "duiit"
MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_SIGNATURES = (b"PK\x03\x04", b"\x80")  # torch.save zip archive, raw pickle protocol 2+


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
    bundle.predictor()  # header/weights consistency, checked up front
    if bundle.has_translator:
        bundle.translator()
    return bundle


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
    if start.startswith(PICKLE_SIGNATURES):
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
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
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
    if header["task"] == "classification" and len(header.get("label_names") or []) < 2:
        raise DuiitError(f"{path}: classification bundle without at least two label names")
    return header
