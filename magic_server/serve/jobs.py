"""Jobs, the fair queue and the engine worker threads.

Each worker thread owns one engine (one per device) and is the only thread that calls it; it
never touches a socket. It reports through `emit(WorkerEvent)`, which the server loop drains
(see server.py).
"""

from __future__ import annotations

import collections
import gc
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from magic_protocol import protocol as P
from magic_protocol.protocol import ErrorCode, FrameSpec
from magic_server.devices import is_out_of_memory
from magic_server.engine.api import Cancelled, EngineInputError, Progress, SynthesisOptions
from magic_server.imageio import composite_over

log = logging.getLogger("magic_server")

PROGRESS_MIN_INTERVAL_S = 0.1  # at most ten progress events a second
PREVIEW_MIN_INTERVAL_S = 0.25  # at most four preview frames a second
PREVIEW_EVERY = 5  # ask the engine for previews every this many iterations


class JobState(str, Enum):
    """Where a server job is in its life (a summary's `state`)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class WorkerState(str, Enum):
    """A worker's `state` in `workers` (welcome, status_report)."""

    IDLE = "idle"
    BUSY = "busy"
    FAILED = "failed"


@dataclass
class ServerJob:
    owner: bytes  # ROUTER routing id of the submitter
    req: str | None  # the submitter's request tag, echoed on every event
    params: P.SubmitParams
    frames: dict[str, tuple[FrameSpec, Any]] | None  # raw buffers until the worker decodes them
    width: int
    height: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled"
    state: JobState = JobState.QUEUED
    submitted_at: float = field(default_factory=time.monotonic)
    worker: int | None = None  # index of the worker running it (set by the server loop)
    cancel_key: str | None = None  # the submitter's secret to cancel it by (before its id)

    def release(self) -> None:
        """Drop the pixel buffers (a cancelled or finished job keeps no image memory)."""
        self.frames = None

    def summary(self, viewer: bytes | None = None, position: int | None = None) -> dict:
        d = {"job": self.id, "state": self.state.value, "mode": self.params.mode,
             "samples": self.params.samples, "preset": self.params.preset,
             "width": self.width, "height": self.height, "mine": viewer == self.owner}
        if position is not None:
            d["position"] = position
        if self.worker is not None:
            d["worker"] = self.worker
        return d


class FairQueue:
    """Queued jobs, served round-robin over clients (FIFO within one client)."""

    def __init__(self) -> None:
        self._by_client: collections.OrderedDict[bytes, collections.deque[ServerJob]] = \
            collections.OrderedDict()

    def push(self, job: ServerJob) -> None:
        self._by_client.setdefault(job.owner, collections.deque()).append(job)

    def pop(self) -> ServerJob | None:
        if not self._by_client:
            return None
        owner, jobs = next(iter(self._by_client.items()))
        job = jobs.popleft()
        if jobs:
            self._by_client.move_to_end(owner)
        else:
            del self._by_client[owner]
        return job

    def remove(self, job: ServerJob) -> bool:
        jobs = self._by_client.get(job.owner)
        if jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._by_client[job.owner]
        return True

    def order(self) -> list[ServerJob]:
        """The order in which pop() will return the queued jobs."""
        lanes = [list(jobs) for jobs in self._by_client.values()]
        out: list[ServerJob] = []
        depth = 0
        while len(out) < len(self):
            for lane in lanes:
                if depth < len(lane):
                    out.append(lane[depth])
            depth += 1
        return out

    def count_for(self, owner: bytes) -> int:
        return len(self._by_client.get(owner, ()))

    def __iter__(self) -> Iterator[ServerJob]:
        for jobs in list(self._by_client.values()):
            yield from list(jobs)

    def __len__(self) -> int:
        return sum(len(j) for j in self._by_client.values())


@dataclass
class WorkerEvent:
    """Something the worker reports about a job; `kind` is a protocol reply type."""

    kind: str  # PROGRESS | RESULT | ERROR | CANCELLED
    job: ServerJob
    fields: dict[str, Any]
    frames: list[tuple[FrameSpec, Any]] = field(default_factory=list)


@dataclass
class WorkerFailure:
    """A worker thread ended by a failure outside any job (binding its device, its loop):
    `cause` is the exception in one line, `binding` whether it failed before its loop."""

    worker: int
    device: str
    cause: str
    binding: bool


def one_line(exc: BaseException, limit: int = 300) -> str:
    message = str(exc).strip()
    return type(exc).__name__ + (f": {message.splitlines()[0][:limit]}" if message else "")


@dataclass
class Inputs:
    """A job's frames decoded for the engine (numpy copies; the raw buffers can go)."""

    image: np.ndarray  # uint8 HxWx3
    source: np.ndarray | None = None  # bool HxW masks (binary edits)
    guide: np.ndarray | None = None
    init: np.ndarray | None = None  # the "init" frame laid over the image: uint8 HxWx3
    source_labels: np.ndarray | None = None  # label maps as sent: HxW grey or HxWx3 colours
    target_labels: np.ndarray | None = None


def decode_inputs(job: ServerJob) -> Inputs:
    """Raw frames -> engine inputs."""
    assert job.frames is not None
    h, w = job.height, job.width

    def plane(name: str) -> np.ndarray | None:
        if name not in job.frames:
            return None
        spec, buf = job.frames[name]
        a = np.frombuffer(buf, dtype=np.uint8).reshape(h, w, spec.channels)
        return np.array(a[:, :, 0] if spec.channels == 1 else a)

    image = np.ascontiguousarray(plane(P.FRAME_IMAGE)[:, :, :3])
    out = Inputs(image, source_labels=plane(P.FRAME_SOURCE_LABELS),
                 target_labels=plane(P.FRAME_TARGET_LABELS))
    if P.FRAME_SOURCE_MASK in job.frames:
        out.source = plane(P.FRAME_SOURCE_MASK) > P.MASK_THRESHOLD
        out.guide = plane(P.FRAME_GUIDE_MASK) > P.MASK_THRESHOLD
    if P.FRAME_INIT in job.frames:
        out.init = composite_over(plane(P.FRAME_INIT), image)
    return out


def free_device_memory(device: str | None = None) -> None:
    """After an out-of-memory error: collect what the failed call left behind and give the
    CUDA caching allocator's free blocks on `device` (a "cuda:N" string; None: the current
    one) back to the driver. Call it once the exception is gone: its traceback keeps the
    engine's frames, and with them their tensors, alive."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or (device is not None and not str(device).startswith("cuda")):
        return
    try:
        if not torch.cuda.is_available():
            return
        if device is None:
            torch.cuda.empty_cache()
        else:
            with torch.cuda.device(torch.device(device)):
                torch.cuda.empty_cache()
    except (RuntimeError, ValueError) as exc:  # best effort after an OOM
        log.debug("could not empty the CUDA cache: %s", exc)


def cuda_index(torch: Any, device: str) -> int:
    """The index of a CUDA device string; a bare "cuda" means the current device (set_device
    refuses a torch.device without an index)."""
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def engine_device(engine: Any) -> str:
    """The device an engine runs on, as a string ("cpu", "cuda:0", ...)."""
    return str(getattr(engine, "device", "cpu"))


class Worker(threading.Thread):
    """Runs jobs one at a time on one engine (one worker per device)."""

    def __init__(self, engine: Any, emit: Callable[[WorkerEvent | WorkerFailure], None], *,
                 default_resolution: int = 224, name: str = "magic-worker",
                 on_exit: Callable[[], None] | None = None, index: int = 0) -> None:
        super().__init__(name=name, daemon=True)
        self.engine = engine
        self.emit = emit
        self.on_exit = on_exit
        self.index = index
        self.failure: WorkerFailure | None = None  # set when it ended by a failure
        self.threads: int | None = None  # torch intra-op threads for this worker (CPU share)
        self.default_resolution = default_resolution
        self._inbox: collections.deque[ServerJob | None] = collections.deque()
        self._ready = threading.Condition()

    def start_job(self, job: ServerJob) -> None:
        with self._ready:
            self._inbox.append(job)
            self._ready.notify()

    def stop(self) -> None:
        with self._ready:
            self._inbox.append(None)
            self._ready.notify()

    @property
    def device(self) -> str:
        return engine_device(self.engine)

    def run(self) -> None:
        binding = True
        try:
            self._bind_device()
            binding = False
            self._loop()
        except BaseException as exc:
            where = "binding its device" if binding else "outside a job"
            log.exception("worker %d (%s) failed %s", self.index, self.device, where)
            self.failure = WorkerFailure(self.index, self.device, one_line(exc), binding)
            try:
                self.emit(self.failure)
            except BaseException:
                log.exception("worker %d could not report its failure", self.index)
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def _bind_device(self) -> None:
        """A CUDA worker makes its GPU this thread's current device, so that anything that
        uses "the current device" (allocator calls, streams, empty_cache) means its own; a CPU
        worker given a share of the cores sets its own OpenMP team size (set_num_threads acts
        on the calling thread, and is the default of threads started later)."""
        torch = sys.modules.get("torch")
        if torch is None:
            return
        device = self.device
        if self.threads:
            torch.set_num_threads(self.threads)
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.set_device(cuda_index(torch, device))

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._inbox:
                    self._ready.wait()
                job = self._inbox.popleft()
            if job is None:
                return
            try:
                event = self._run(job)
            except BaseException as exc:
                log.exception("job %s: unexpected failure", job.id[:8])
                event = WorkerEvent(P.ERROR, job, {"code": ErrorCode.INTERNAL,
                                                   "message": f"server error: {exc}"})
            finally:
                job.release()
            self.emit(event)

    def _run(self, job: ServerJob) -> WorkerEvent:
        if job.cancel.is_set():
            return WorkerEvent(P.CANCELLED, job, {"message": job.cancel_reason})
        p = job.params
        options = SynthesisOptions(
            samples=p.samples, preset=p.preset, iterations=p.iterations, seed=p.seed,
            mode=p.mode, resolution=p.resolution or self.default_resolution,
            preview_every=PREVIEW_EVERY if p.preview else 0, composite=p.composite,
            refine=p.refine)
        inputs = decode_inputs(job)
        job.release()  # the numpy copies are all the engine needs
        throttle = _ProgressThrottle(job, self.emit, p.preview)
        out_of_memory: str | None = None
        try:
            result = self._call_engine(inputs, options, throttle, job)
        except Cancelled:
            return WorkerEvent(P.CANCELLED, job, {"message": job.cancel_reason})
        except EngineInputError as exc:
            return WorkerEvent(P.ERROR, job, {"code": ErrorCode.ENGINE_INPUT,
                                              "message": str(exc)})
        except Exception as exc:  # torch.cuda.OutOfMemoryError among them
            if not is_out_of_memory(exc):
                raise
            out_of_memory = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if out_of_memory is not None:
            # Out of the except block: the exception, its traceback and the engine frames it
            # held (with their tensors) are gone, so the memory can really be given back.
            del inputs, throttle
            device = self.device
            free_device_memory(device)
            log.warning("job %s on worker %d (%s): out of memory (%s); memory freed",
                        job.id[:8], self.index, device, out_of_memory)
            where = f"the GPU ({device})" if device.startswith("cuda") else "the server"
            return WorkerEvent(P.ERROR, job, {
                "code": ErrorCode.OUT_OF_MEMORY,
                "message": f"{where} ran out of memory: try fewer samples, a lower "
                           "resolution or a smaller selection"})
        if job.cancel.is_set():
            return WorkerEvent(P.CANCELLED, job, {"message": job.cancel_reason})
        frames = []
        for i, img in enumerate(result.images):
            img = np.asarray(img)
            if img.shape != (job.height, job.width, 3) or img.dtype != np.uint8:
                raise RuntimeError(f"engine returned an image of shape {img.shape} "
                                   f"{img.dtype}, expected {(job.height, job.width, 3)} uint8")
            frames.append((FrameSpec(f"result{i}", job.width, job.height, 3),
                           np.ascontiguousarray(img)))
        fields = {"seeds": [int(s) for s in result.seeds],
                  "predicted_class": int(result.predicted_class),
                  "iterations": int(result.iterations),
                  "elapsed_s": P.finite_or_none(result.elapsed_s),
                  "losses": _clean_losses(result.losses)}
        region = getattr(result, "region", None)
        if region is not None:
            fields["region"] = [int(v) for v in region]
        notes = getattr(result, "notes", None)
        if notes:
            fields["notes"] = [str(n) for n in notes]
        return WorkerEvent(P.RESULT, job, fields, frames)

    def _call_engine(self, inputs: Inputs, options: SynthesisOptions,
                     on_progress: Callable[[Progress], None], job: ServerJob) -> Any:
        """The engine call a job's mode asks for. Label maps are read here (snapped, checked:
        their errors are the user's, like the engine's input errors)."""
        mode = job.params.mode
        if mode == P.LABEL_MAP:
            return label_map_result(inputs.image, job.params.labels or 0, job.params.seed,
                                    on_progress, job.cancel)
        if mode == P.LAYOUT:
            from magic_server.labels.maps import LabelMapError, read_label_maps

            try:
                maps = read_label_maps(inputs.source_labels, inputs.target_labels)
            except LabelMapError as exc:
                raise EngineInputError(str(exc)) from None
            return self.engine.synthesize_layout(inputs.image, maps.source, maps.target,
                                                 options, on_progress=on_progress,
                                                 cancel=job.cancel, init_image=inputs.init)
        return self.engine.synthesize(inputs.image, inputs.source, inputs.guide, options,
                                      on_progress=on_progress, cancel=job.cancel,
                                      init_image=inputs.init)


@dataclass
class LabelMapResult:
    """A label-map job's answer, shaped like a SynthesisResult for the result event."""

    images: list[np.ndarray]  # one HxWx3 uint8 map, a flat colour per label
    seeds: list[int]
    elapsed_s: float
    predicted_class: int = -1
    iterations: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def label_map_result(image: np.ndarray, labels: int, seed: int,
                     on_progress: Callable[[Progress], None], cancel: threading.Event
                     ) -> LabelMapResult:
    """A first label map of the photo (magic_server.labels.clustering), in label colours."""
    from magic_server.labels.clustering import colour_map, first_label_map, label_palette

    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        on_progress(Progress(done, total, time.monotonic() - t0, stage="label-map"))

    indices = first_label_map(image, labels, seed=seed, cancel=cancel, on_progress=progress)
    found = int(indices.max()) + 1
    notes = [] if found == labels else [f"the photo gave {found} regions, not {labels}"]
    return LabelMapResult([colour_map(indices, label_palette(found))], [seed],
                          time.monotonic() - t0, notes=notes)


class _ProgressThrottle:
    """The engine's on_progress: forwards at most ten events and four previews a second."""

    def __init__(self, job: ServerJob, emit: Callable[[WorkerEvent], None], previews: bool) -> None:
        self.job, self.emit, self.previews = job, emit, previews
        self.last_sent = self.last_preview = float("-inf")
        self.stage: str | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        last = progress.iteration >= progress.total
        new_stage = progress.stage != self.stage  # always told, so clients can relabel
        if not (last or new_stage) and now - self.last_sent < PROGRESS_MIN_INTERVAL_S:
            return
        self.last_sent, self.stage = now, progress.stage
        fields = {"iteration": int(progress.iteration), "total": int(progress.total),
                  "elapsed_s": P.finite_or_none(progress.elapsed_s),
                  "eta_s": P.finite_or_none(progress.eta_s), "stage": str(progress.stage),
                  "losses": _clean_losses(progress.losses)}
        frames = []
        if (self.previews and progress.previews
                and now - self.last_preview >= PREVIEW_MIN_INTERVAL_S):
            self.last_preview = now
            for i, pv in enumerate(progress.previews):
                pv = np.ascontiguousarray(pv, dtype=np.uint8)
                if pv.ndim == 3 and pv.shape[2] == 3:
                    frames.append((FrameSpec(f"preview{i}", pv.shape[1], pv.shape[0], 3), pv))
        self.emit(WorkerEvent(P.PROGRESS, self.job, fields, frames))


def _clean_losses(losses: dict | None) -> dict[str, float | None]:
    return {str(k): P.finite_or_none(v) for k, v in (losses or {}).items()}
