"""Training checkpoints: everything needed to continue the same schedule exactly, without pickle code.

Saved with torch.save and read with torch.load(weights_only=True), which only rebuilds tensors and
plain containers; written atomically so an interrupted write never replaces a good checkpoint.
"""

from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import DuiitError

KIND = "duiit-checkpoint"
VERSION = 1


def checkpoint_path(bundle_path) -> Path:
    return Path(str(bundle_path) + ".ckpt")


def save_checkpoint(path, state: dict) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save({"kind": KIND, "version": VERSION, **state}, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (a full disk) this way
            raise OSError(f"incomplete write: {str(exc).strip().splitlines()[-1][:160]}") from None


def load_checkpoint(path, options: dict, defaults: dict | None = None) -> dict:
    """The checkpoint at `path`; refuses one made with other training options. An option the checkpoint does
    not record (it predates the option) counts as its value in `defaults`."""
    path = Path(path)
    if not path.exists():
        raise DuiitError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise DuiitError(f"{path}: damaged checkpoint or not a DUIIT checkpoint ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise DuiitError(f"{path}: not a DUIIT checkpoint")
    if state.get("version", 0) > VERSION:
        raise DuiitError(f"{path}: checkpoint version {state.get('version')} is newer than this DUIIT supports")
    made_with = {**(defaults or {}), **state["options"]}
    different = sorted(k for k in options if made_with.get(k) != options[k])
    if different:
        k = different[0]
        raise DuiitError(f"{path}: made with {k}={made_with.get(k)!r}, now {k}={options[k]!r}; "
                         "resume with the same options or start afresh without --resume")
    return state
