"""Atomic file output: write beside the destination, then rename, so no half-written file is ever seen.

The temporary file is flushed to the disk (fsync) before the rename, so a full disk or quota that only
shows at flush time is an error here, and a crash or power cut leaves the old file or the complete new one.
"""

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import DuiitError


def _check_parent_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DuiitError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from None
    if not parent.is_dir():
        raise DuiitError(f"{path}: cannot write there ({parent} is not a folder)")
    if not os.access(parent, os.W_OK):
        raise DuiitError(f"{path}: the output folder is not writable")


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    _check_parent_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise DuiitError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        yield Path(tmp)
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        reason = _reason(exc, path.parent)
        _remove(tmp)
        raise DuiitError(f"{path}: cannot write ({reason})") from None
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary folder beside `path`; on success it replaces `path` (an old folder is removed)."""
    path = Path(path)
    _check_parent_writable(path)
    if path.exists() and not path.is_dir():
        raise DuiitError(f"{path}: exists and is not a folder")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise DuiitError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        yield tmp
        for item in tmp.iterdir():
            _flush_to_disk(item)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        reason = _reason(exc, path.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        raise DuiitError(f"{path}: cannot write ({reason})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove(tmp):
    with contextlib.suppress(OSError):
        os.remove(tmp)


def _flush_to_disk(path):
    if not os.path.isfile(path):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError, folder) -> str:
    """Why a write failed, in words; a full disk is named as such even when a library's message hides it."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or _disk_full(folder):
        return "no space left on device"
    if exc.errno == errno.EFBIG:
        return "file too large for this file system or over the file size limit"
    return exc.strerror or str(exc)


def _disk_full(folder) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail == 0
