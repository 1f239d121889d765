"""The worker-process protocol of DUIIT Train, without qt or Slicer, so tests can drive it headless.

The panel runs the core's command line (`python -m duiit train ... --progress-json`) in a separate process
with Slicer's Python. The worker prints one JSON object per line on stdout (start, progress, checkpoint,
done, cancelled, error); `poll()` returns the events that arrived since the last call, never blocking, so
a QTimer in the panel can call it a few times a second while the GUI stays responsive.

Lines that are not JSON come back as {"event": "log", "stream": "stdout"|"stderr", "message": ...}; when the
process has ended and its output is read, one last {"event": "exit", "returncode": rc} is returned.

`cancel()` asks the worker to stop (SIGTERM on POSIX, CTRL_BREAK on Windows): it saves a checkpoint,
prints {"event": "cancelled", "checkpoint": ...} and exits with code 130. `kill()` stops it without
a checkpoint.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

EXIT_CANCELLED = 130
EXIT_ERROR = 2
OOM_ADVICE = " (the GPU ran out of memory: lower the image size or the batch size, or use the small network)"


def duiit_package_root() -> str:
    """The folder that holds the `duiit` package (put on the worker's PYTHONPATH)."""
    import duiit
    return str(Path(duiit.__file__).resolve().parent.parent)


def in_slicer_application() -> bool:
    slicer = sys.modules.get("slicer")
    return getattr(slicer, "app", None) is not None


def worker_options() -> dict:
    """WorkerProcess options for the Python that runs here: Slicer's (see `slicer_python`) or this one."""
    return slicer_python() if in_slicer_application() else {"python": sys.executable, "env": None}


def slicer_python() -> dict:
    """WorkerProcess options for running the worker with Slicer's Python, from inside Slicer.

    Slicer's process already has the environment its launcher set up, so the interpreter itself
    (python-real, beside the PythonSlicer launcher) runs the worker directly and a cancel signal reaches it.
    Without python-real, the PythonSlicer launcher runs it with Slicer's startup environment and a cancel
    signals the launcher's process group.
    """
    import shutil
    launcher = shutil.which("PythonSlicer")
    if launcher:
        folder = Path(launcher).resolve().parent
        for name in ("python-real.exe", "python-real") if os.name == "nt" else ("python-real",):
            if (folder / name).is_file():
                return {"python": str(folder / name), "env": None}
        import slicer.util
        return {"python": launcher, "env": slicer.util.startupEnvironment(), "signal_group": True}
    return {"python": sys.executable, "env": None}


class WorkerProcess:
    """Runs `python -m duiit <subcommand> ...` and collects its output lines as events."""

    def __init__(self, python: str | None = None, env: dict | None = None, cwd: str | None = None,
                 signal_group: bool = False):
        """`signal_group`: cancel signals the worker's whole process group, for a `python` that is a launcher
        (Slicer's PythonSlicer) which starts the real interpreter as its child and does not pass signals on."""
        if python is None:
            defaults = worker_options()
            python, env = defaults["python"], defaults["env"] if env is None else env
            signal_group = defaults.get("signal_group", signal_group)
        self.python = python
        self.base_env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.signal_group = signal_group
        self.process: subprocess.Popen | None = None
        self.command: list[str] = []
        self.stderr_tail: collections.deque = collections.deque(maxlen=200)
        self._events: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._exit_reported = False
        self.cancel_requested = False

    # -- starting ---------------------------------------------------------------------------------------

    def build_command(self, subcommand: str, args: list[str]) -> list[str]:
        return [self.python, "-m", "duiit", subcommand, *[str(a) for a in args]]

    def environment(self) -> dict:
        env = dict(self.base_env)
        root = duiit_package_root()
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        return env

    def start_command(self, subcommand: str, args: list[str]) -> None:
        if self.is_running:
            raise RuntimeError("a worker process is already running")
        self.command = self.build_command(subcommand, args)
        self.stderr_tail.clear()
        self._events = queue.Queue()
        self._exit_reported = False
        self.cancel_requested = False
        kwargs = {}
        if os.name == "nt":
            # Its own process group, so CTRL_BREAK reaches the worker and not Slicer; no console window.
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in Slicer's terminal does not reach the worker
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.environment(), cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **kwargs)
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            line = line.rstrip("\r\n")
            if not line:
                continue
            if name == "stderr":
                self.stderr_tail.append(line)
            self._events.put(parse_line(line, name))
        stream.close()

    # -- reading ----------------------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """The events received since the last call (never blocks); ends with one "exit" event."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        if (self.process is not None and not self._exit_reported and self.process.poll() is not None
                and not any(r.is_alive() for r in self._readers)):
            while True:  # lines queued between the first drain and the readers' end
                try:
                    events.append(self._events.get_nowait())
                except queue.Empty:
                    break
            self._exit_reported = True
            events.append({"event": "exit", "returncode": self.process.returncode})
        return events

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end (for scripts and tests; the panel never calls this)."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        return self.process.returncode

    @property
    def is_running(self) -> bool:
        """True while the process runs or its output is still open (a launcher's child may outlive it)."""
        if self.process is None:
            return False
        return self.process.poll() is None or any(r.is_alive() for r in self._readers)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    # -- stopping ---------------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the worker to checkpoint and stop; False when no worker is running."""
        if self.process is None or self.process.poll() is not None:
            return False
        self.cancel_requested = True
        try:
            if os.name == "nt":
                self.process.send_signal(signal.CTRL_BREAK_EVENT)  # reaches its whole process group
            elif self.signal_group:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the group id is its pid
            else:
                self.process.send_signal(signal.SIGTERM)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        """Stop the worker at once (no checkpoint)."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.signal_group and os.name != "nt":
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()


class TrainingWorker(WorkerProcess):
    """`duiit train ... --progress-json` as a worker process."""

    def start(self, args: list[str]) -> None:
        args = [str(a) for a in args]
        if "--progress-json" not in args:
            args.append("--progress-json")
        self.start_command("train", args)


def parse_line(line: str, stream: str = "stdout") -> dict:
    """One output line as an event dict (JSON objects with an "event" key; anything else is a log line)."""
    if stream == "stdout" and line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
    return {"event": "log", "stream": stream, "message": line}


def format_duration(seconds) -> str:
    """A short human duration for an ETA: '45 s', '3 min 05 s', '2 h 07 min'."""
    if seconds is None:
        return "unknown"
    seconds = max(0, int(round(float(seconds))))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_fraction(event: dict) -> float:
    """Overall fraction done (0..1) from a progress event: all phases when the worker says, else this phase."""
    done = event.get("step", event.get("iteration", 0))
    total = event.get("total_steps", event.get("total", 0))
    try:
        return min(max(float(done) / float(total), 0.0), 1.0) if total else 0.0
    except (TypeError, ValueError):
        return 0.0


class TrainingMonitor:
    """Turns worker events into what the panel shows (state, progress, ETA, results); no qt, no MRML."""

    def __init__(self):
        self.state = "idle"  # idle | running | done | cancelled | failed
        self.phase = ""
        self.fraction = 0.0
        self.eta_s = None
        self.elapsed_s = None
        self.losses: dict = {}
        self.device = ""
        self.checkpoint = None
        self.bundle = None
        self.report = None
        self.metrics: dict = {}
        self.message = ""
        self.log: collections.deque = collections.deque(maxlen=500)

    def handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.state = "running"
            self.device = str(event.get("device", ""))
            self.message = event.get("device_message") or f"started {event.get('method', '')} on {self.device}"
        elif kind == "loading":
            self.state = "running"
            self.message = str(event.get("message", "reading the volumes"))
        elif kind == "progress":
            self.state = "running"
            self.phase = str(event.get("phase", ""))
            self.fraction = progress_fraction(event)
            self.eta_s = event.get("eta_s")
            self.elapsed_s = event.get("elapsed_s")
            self.losses = dict(event.get("losses") or {})
        elif kind == "checkpoint":
            self.checkpoint = event.get("path")
        elif kind == "done":
            self.state = "done"
            self.fraction = 1.0
            self.eta_s = 0
            self.bundle = event.get("bundle")
            self.report = event.get("report")
            self.metrics = dict(event.get("metrics") or {})
            self.message = f"done: {self.bundle}"
        elif kind == "cancelled":
            self.state = "cancelled"
            self.checkpoint = event.get("checkpoint") or self.checkpoint
            self.message = f"cancelled; checkpoint kept at {self.checkpoint} (Resume continues from it)"
        elif kind == "error":
            self.state = "failed"
            self.message = str(event.get("message", "the worker failed"))
        elif kind == "log":
            self.log.append(event.get("message", ""))
        elif kind == "exit":
            code = event.get("returncode")
            if self.state in ("idle", "running"):
                if code == EXIT_CANCELLED:
                    self.state = "cancelled"
                    self.message = "cancelled"
                elif code == 0:
                    self.state = "done"
                else:
                    self.state = "failed"
                    last = next((line for line in reversed(self.log) if line.strip()), "")
                    self.message = f"the worker stopped with exit code {code}" + (f": {last}" if last else "")
        if self.state == "failed" and "out of memory" in self.message.lower() and OOM_ADVICE not in self.message:
            self.message += OOM_ADVICE

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def status_text(self) -> str:
        if self.state == "running" and not self.phase:
            return self.message or "starting the worker..."
        if self.state == "running":
            loss = ", ".join(f"{k} {v:.3g}" for k, v in list(self.losses.items())[:3]
                             if isinstance(v, (int, float)))
            eta = format_duration(self.eta_s) if self.eta_s is not None else "estimating"
            return f"{self.phase or 'starting'}: {self.fraction * 100:.0f}% - ETA {eta}" + (f" - {loss}" if loss else "")
        return self.message or self.state
