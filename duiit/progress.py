"""Training progress for people (a bar on stderr) or for the Slicer panel (one JSON object per line)."""

import json
import sys
import time


class Progress:
    def __init__(self, json_lines: bool = False, enabled: bool = True, stream=None):
        self.json_lines = json_lines
        self.enabled = enabled
        self.stream = stream
        self.started = time.monotonic()
        self._last_bar = 0.0
        self._last_json = 0.0
        self._first_done = None  # step at which this process started (a resume starts mid-way)
        self._bar_open = False

    def event(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        if self.json_lines:
            print(json.dumps({"event": event, **fields}), file=self.stream or sys.stdout, flush=True)
        elif event != "progress":
            self._end_bar()
            text = " ".join(f"{k}={v}" for k, v in fields.items() if not isinstance(v, (dict, list)))
            print(f"[duiit] {event} {text}", file=self.stream or sys.stderr, flush=True)

    def step(self, phase: str, iteration: int, total: int, done_before: int, grand_total: int, losses: dict) -> None:
        """`iteration` of `total` in this phase; ETA counts all phases (`done_before` + this of `grand_total`)."""
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.started
        done = done_before + iteration
        if self._first_done is None:
            self._first_done = done - 1
        eta = elapsed / max(done - self._first_done, 1) * (grand_total - done)
        final = iteration == total
        if self.json_lines:
            if final or now - self._last_json >= 0.5:
                self._last_json = now
                self.event("progress", phase=phase, iteration=iteration, total=total, step=done,
                           total_steps=grand_total, losses={k: round(v, 5) for k, v in losses.items()},
                           eta_s=round(eta, 1), elapsed_s=round(elapsed, 1))
        elif final or now - self._last_bar >= 0.2:
            self._last_bar = now
            filled = int(30 * done / max(grand_total, 1))
            main = " ".join(f"{k}={v:.3f}" for k, v in list(losses.items())[:4])
            eta_text = f"{eta:.0f}s"
            print(f"\r{phase:>10} [{'#' * filled}{'.' * (30 - filled)}] {done}/{grand_total} eta {eta_text} {main}",
                  end="", file=self.stream or sys.stderr, flush=True)
            self._bar_open = True

    def close(self) -> None:
        """End an open progress bar line, so what is printed next starts on its own line."""
        self._end_bar()

    def _end_bar(self):
        if self._bar_open:
            print(file=self.stream or sys.stderr, flush=True)
            self._bar_open = False
