"""What the robustness tests tried, counted, and printed in pytest's summary as "ROBUSTNESS: ..." lines.

The tests take the `tally` fixture (import it into the test module: `from robustness_tally import tally`),
count with `tally.add(key, n)` and describe their result with `tally.report(key, text)`. The lines show
at the end of every run, -q included, for the tests that ran.
"""

import collections
import contextlib
import ctypes
import ctypes.util
import os
import signal

import pytest

PREFIX = "ROBUSTNESS:"


class Tally:
    name = "duiit-robustness-tally"

    def __init__(self):
        self.counts = collections.Counter()
        self.lines = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def report(self, key: str, text: str) -> None:
        self.lines[key] = f"{PREFIX} {text}"

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.write_sep("-", "robustness counts")
            for line in self.lines.values():
                terminalreporter.write_line(line)


@pytest.fixture
def tally(request) -> Tally:
    plugin = request.config.pluginmanager.get_plugin(Tally.name)
    if plugin is None:
        plugin = Tally()
        request.config.pluginmanager.register(plugin, Tally.name)
    return plugin


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_bytes() -> int:
    """Bytes the C heap has handed out and not taken back (glibc mallinfo2: in-use blocks + mmapped ones),
    which sees the memory of numpy, torch and ITK alike. Unlike RSS it does not hide a leak behind memory
    the allocator keeps free for reuse. Falls back to RSS where glibc >= 2.33 is not there."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return rss_bytes()
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


class Hang(Exception):
    """An input took longer than the watchdog allows."""


@contextlib.contextmanager
def watchdog(seconds: float):
    """Raise Hang in the main thread after `seconds` (POSIX); a hang inside C code that never returns
    to Python is caught by pytest's faulthandler timeout or the CI job's timeout instead."""
    if not hasattr(signal, "setitimer") or os.name == "nt":
        yield
        return

    def expired(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread for a training run inside the test process: the same arithmetic as the
    OMP_NUM_THREADS=1 workers, and far faster than oversubscribed threads on a shared CI machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
