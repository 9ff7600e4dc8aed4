"""How long a preset takes on this server: seconds per iteration, measured here.

The server reports `report()` in its `welcome` and `status_report` (field "estimates", see
docs/protocol.md); the plug-in shows it beside each preset and asks before a long run.

A job takes about `fixed_seconds` (setting up, learning the object: the same whatever the
iteration count) + iterations x samples x `seconds_per_iteration`. The rate is timed on the
job's synthesis iterations as their progress events pass through the server (so a short job
does not make a long one look endless); the fixed part is the rest of the job's time.

Where the figures come from, best first:
- "measured": finished jobs of that preset on this server (running averages; kept in a small
  JSON file per device and weights, so a restarted server still knows them);
- "other preset": no job of that preset yet, the rate measured on another preset;
- "start-up probe": nothing measured yet: one classifier step timed at start-up (engine
  warm-up at 64 px), scaled to the working resolution and to the classifier forwards of one
  iteration. A rough first figure; the first finished job replaces it.

Standard library only; the probe is a callable given by the server.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("magic-server")

PROBE_SIDE = 64  # Engine.warm_up() runs one forward/backward at 64x64
FORWARDS_PER_ITERATION = 3.5  # README: 3-4 classifier forwards per iteration
AVERAGE_WEIGHT = 0.5  # weight of the newest job in the running average
FILE_NAME = "estimates.json"


def probe_seconds(warm_up: Callable[[], Any], repeats: int = 2) -> float | None:
    """Seconds of one warm-up step (the fastest of `repeats` after a first, untimed one)."""
    try:
        warm_up()
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            warm_up()
            best = min(best, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - an estimate is informative only
        log.warning("timing the engine for estimates failed: %s", exc)
        return None
    return best if math.isfinite(best) and best > 0 else None


def probe_rate(step_s: float | None, resolution: int) -> float | None:
    """Seconds per iteration guessed from one probe step at PROBE_SIDE px."""
    if not step_s:
        return None
    return step_s * (max(resolution, 1) / PROBE_SIDE) ** 2 * FORWARDS_PER_ITERATION


class Estimates:
    """Seconds per iteration (and per sample) for each preset on one device."""

    def __init__(self, preset_iterations: Mapping[str, int], key: str,
                 path: Path | None = None, probe_s_per_it: float | None = None) -> None:
        self.iterations = {str(k): int(v) for k, v in preset_iterations.items()}
        self.key = key  # device + weights: a measurement on another one does not apply
        self.path = path
        self.probe = probe_s_per_it
        self.measured: dict[str, dict[str, float]] = {}  # preset -> {"rate", "fixed", "jobs"}
        self.timing: dict[str, list[float]] = {}  # job id -> [t0, it0, t1, it1] of synthesis
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
            entry = data.get(self.key) if isinstance(data, dict) else None
        except (OSError, ValueError):
            return
        for preset, m in (entry or {}).items():
            if isinstance(m, dict) and float(m.get("rate", 0)) > 0:
                self.measured[str(preset)] = {"rate": float(m["rate"]),
                                              "fixed": max(0.0, float(m.get("fixed", 0))),
                                              "jobs": int(m.get("jobs", 1))}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            if not isinstance(data, dict):
                data = {}
            data[self.key] = self.measured
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}")
            tmp.write_text(json.dumps(data, sort_keys=True, indent=1))
            os.replace(tmp, self.path)
        except (OSError, ValueError) as exc:
            log.warning("could not keep the time estimates in %s: %s", self.path, exc)

    def progress(self, job: str, stage: str | None, iteration: int,
                 now: float | None = None) -> None:
        """A progress event of a running job: synthesis iterations are timed here."""
        if stage not in ("synthesis", "refine", None) or iteration <= 0:
            return
        now = time.monotonic() if now is None else now
        t = self.timing.get(job)
        if t is None:
            self.timing[job] = [now, iteration, now, iteration]
        elif iteration > t[3]:
            t[2], t[3] = now, iteration

    def forget(self, job: str) -> None:
        self.timing.pop(job, None)

    def observe(self, preset: str, iterations: int, samples: int, elapsed_s: float | None,
                job: str | None = None) -> None:
        """A finished job: `iterations` (its schedule's count) for `samples` took elapsed_s;
        `job`: its id, whose synthesis iterations progress() timed."""
        timing = self.timing.pop(job, None) if job is not None else None
        if not elapsed_s or elapsed_s <= 0 or iterations <= 0 or samples <= 0:
            return
        if timing and timing[3] - timing[1] >= 2 and timing[2] > timing[0]:
            per_iteration = (timing[2] - timing[0]) / (timing[3] - timing[1])
            fixed = max(0.0, float(elapsed_s) - per_iteration * iterations)
        else:  # not timed (a stand-in engine, too few events): all of it per iteration
            per_iteration, fixed = float(elapsed_s) / iterations, 0.0
        rate = per_iteration / samples
        old = self.measured.get(preset)
        if old:
            rate = AVERAGE_WEIGHT * rate + (1 - AVERAGE_WEIGHT) * old["rate"]
            fixed = AVERAGE_WEIGHT * fixed + (1 - AVERAGE_WEIGHT) * old.get("fixed", 0.0)
        self.measured[preset] = {"rate": rate, "fixed": fixed,
                                 "jobs": (old or {}).get("jobs", 0) + 1}
        self._save()

    def rate(self, preset: str) -> tuple[float | None, float, str]:
        """(seconds per iteration and sample, fixed seconds, where they come from)."""
        if preset in self.measured:
            m = self.measured[preset]
            return m["rate"], m.get("fixed", 0.0), "measured"
        if self.measured:  # the most used other preset
            other = max(self.measured.values(), key=lambda m: m["jobs"])
            return other["rate"], other.get("fixed", 0.0), "other preset"
        if self.probe:
            return self.probe, 0.0, "start-up probe"
        return None, 0.0, "unknown"

    def report(self) -> dict[str, Any]:
        """The "estimates" field: {preset: {"iterations", "seconds_per_iteration",
        "fixed_seconds", "seconds" (one sample at the preset's own iterations), "source"}};
        presets with no figure are left out."""
        out = {}
        for preset, n in self.iterations.items():
            rate, fixed, source = self.rate(preset)
            if rate is None:
                continue
            out[preset] = {"iterations": n, "seconds_per_iteration": round(rate, 6),
                           "fixed_seconds": round(fixed, 2), "seconds": round(fixed + rate * n, 1),
                           "source": source}
        return out


def default_path() -> Path | None:
    """estimates.json in the weights cache folder (MAGIC_CACHE_DIR wins)."""
    try:
        from magic_server.weights.store import default_cache_dir

        return default_cache_dir() / FILE_NAME
    except Exception:  # noqa: BLE001
        return None
