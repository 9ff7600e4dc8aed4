"""A small progress bar with ETA for long engine runs, written to stderr.

On a terminal the line is redrawn in place (at most a few times a second); in logs and pipes a
full line is printed every ~5% so that CI output stays short but shows the run is alive.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 24
LOG_STEP = 0.05  # print a line every 5% when not on a terminal
REDRAW_S = 0.2
# What the engine's stages (Progress.stage) are called on screen.
STAGE_LABELS = {"mask-net": "learning the object", "synthesis": "synthesizing",
                "refine": "refining"}


def format_seconds(s: float | None) -> str:
    if s is None or math.isnan(s) or s < 0:
        return "?"
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class EditProgressBar:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self._stage: str | None = None
        self._next_log = 0.0
        self._last_draw = float("-inf")
        self._drawn = False  # a TTY line is on screen without its newline

    def update(self, done: int, total: int, stage: str = "", elapsed_s: float | None = None,
               eta_s: float | None = None) -> None:
        total = max(int(total), 1)
        frac = min(max(done / total, 0.0), 1.0)
        if stage != self._stage:
            self._end_line()
            self._stage, self._next_log = stage, 0.0
        if eta_s is None and elapsed_s is not None and done > 0:
            eta_s = elapsed_s / done * (total - done)
        finished = done >= total
        line = self._line(done, total, frac, stage, elapsed_s, eta_s)
        if self.tty:
            now = self.clock()
            if not finished and now - self._last_draw < REDRAW_S:
                return
            self._last_draw = now
            self.stream.write("\r" + line + "\x1b[K")
            self._drawn = True
            if finished:
                self._end_line()
        elif frac >= self._next_log or finished:
            self.stream.write(line + "\n")
            self._next_log = (int(frac / LOG_STEP + 1e-9) + 1) * LOG_STEP
            if finished:
                self._next_log = float("inf")
        self.stream.flush()

    def __call__(self, progress) -> None:
        """Accepts magic_server.engine.api.Progress objects directly; each stage gets its own
        labelled line (the count restarts with the mask network's own steps)."""
        stage = STAGE_LABELS.get(progress.stage, progress.stage)
        self.update(progress.iteration, progress.total, stage, progress.elapsed_s,
                    progress.eta_s)

    def close(self) -> None:
        self._end_line()
        self.stream.flush()

    def _end_line(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False

    @staticmethod
    def _line(done: int, total: int, frac: float, stage: str, elapsed_s: float | None,
              eta_s: float | None) -> str:
        bar = "#" * int(frac * WIDTH)
        head = f"{stage}: " if stage else ""
        tail = f"  {format_seconds(elapsed_s)} elapsed" if elapsed_s is not None else ""
        if done < total:
            tail += f", ETA {format_seconds(eta_s)}"
        return f"{head}[{bar:<{WIDTH}}] {frac * 100:3.0f}% {done}/{total}{tail}"
