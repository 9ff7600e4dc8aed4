"""One optimisation step captured once and replayed (the GPU fast path for whole iterations).

A GPU iteration of MAGIC is bound by kernel launches, not arithmetic: ResNet-50's forward and
input backward, the critic's WGAN-GP step and the update of x' are hundreds of small kernels
each. A CUDA graph records them once and replays them with one launch. What makes a step
replayable is that it reads only tensors that stay where they are (x', the optimisers' state,
the critic, static inputs copied in before each replay) and never asks the host for a value;
the engine's steps are written that way (engine/adam.py keeps the learning rate and step count on
the device; the critic's random crops are drawn on the host and passed in as indices).

Backends:
- "cuda-graph": torch.cuda.CUDAGraph (warm-up on a side stream, capture, replay);
- "trace": the CPU's stand-in for a graph: the step's operations are recorded once
  (torch.fx's make_fx, which runs them) and the record is replayed. Like a CUDA graph it freezes
  every host value the step read while recorded, so a step that would replay wrongly on a GPU
  replays wrongly here too, and a step that reads a device value on the host is refused. Tests
  check the engine's steps on the CPU this way.

Every capture is checked once: the first replay is compared with the same step run eagerly
from the same state. A step that fails to capture, reads the host, or replays differently runs
eager from then on; the reason is logged once and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from magic_server.engine.capture import failure_line

log = logging.getLogger("magic_server")

BACKENDS = ("cuda-graph", "trace")
WARMUP_CALLS = 2  # eager calls before capturing (CUDA: lazy initialisation, workspaces)
# the first replay may differ from the eager step by this share of each tensor's largest value
# (a CUDA graph runs the same kernels: a frozen host value differs by far more)
VERIFY_TOLERANCE = 1e-4
# operations that hand a device value to the host or size a tensor by its data: a CUDA graph
# cannot contain them, so a traced step holding one is refused
HOST_READS = ("_local_scalar_dense", "nonzero", "item", "masked_select", "unique")

Step = Callable[..., tuple[torch.Tensor, ...]]


class CaptureError(RuntimeError):
    """The step cannot be captured or replayed faithfully."""


class CapturedStep:
    """`step(*inputs) -> tuple of tensors`, eager for the first calls, then replayed.

    `state()` lists every tensor the step writes (its parameters and optimiser state): it is
    saved before a capture and before the checked replay, so that neither changes anything when
    it fails. The tensors returned by a replay are overwritten by the next one: read them first.
    """

    def __init__(self, step: Step, state: Callable[[], Sequence[torch.Tensor]], backend: str,
                 name: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"capture backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.step = step
        self.state = state
        self.backend = backend
        self.name = name
        self.calls = 0
        self.replays = 0
        self.failure: str | None = None
        self._replay: Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, ...]] | None = None
        self._checked = False

    @property
    def active(self) -> bool:
        return self.failure is None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        if self.failure is not None or self.calls <= WARMUP_CALLS:
            return self._eager(inputs)
        try:
            if self._replay is None:
                return self._capture(inputs)
            if not self._checked:
                return self._checked_replay(inputs)
            self.replays += 1
            return self._replay(inputs)
        except Exception as exc:  # noqa: BLE001 - any failure to capture or replay falls back
            self._fall_back(exc)
            return self._eager(inputs)

    # -- eager --------------------------------------------------------------------------

    def _eager(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self.backend == "cuda-graph" and self.calls <= WARMUP_CALLS and self.failure is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        return self.step(*inputs)

    # -- capture --------------------------------------------------------------------------

    def _capture(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        saved = _copy(self.state())
        try:
            if self.backend == "cuda-graph":
                out = self._capture_cuda(inputs)
            else:
                out = self._capture_trace(inputs)
        except BaseException:
            _restore(self.state(), saved)  # a trace runs what it records: undo a partial step
            raise
        log.debug("captured %s (%s)", self.name, self.backend)
        return out

    def _capture_cuda(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        static = [t.clone() for t in inputs]
        graph = torch.cuda.CUDAGraph()
        # thread_local: the server's other workers may use their own GPUs meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = tuple(self.step(*static))

        def replay(new: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
            for slot, value in zip(static, new):
                slot.copy_(value, non_blocking=True)
            graph.replay()
            return outputs

        self._replay = replay
        return replay(inputs)  # capturing ran nothing: this call's step is the first replay

    def _capture_trace(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        from torch.fx.experimental.proxy_tensor import make_fx

        outputs: list[tuple[torch.Tensor, ...]] = []

        def recorded(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = tuple(self.step(*args))
            outputs.append(out)
            return out

        try:
            graph = make_fx(recorded)(*inputs)  # runs the step once, for real, recording it
        except RuntimeError as exc:
            read = next((op for op in HOST_READS if f"aten.{op}." in str(exc)), None)
            if read is None:
                raise
            raise CaptureError(f"the step reads the device on the host ({read})") from exc
        reads = _host_reads(graph)
        if reads:
            raise CaptureError(f"the step reads the device on the host ({', '.join(reads)})")

        def replay(new: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():  # the record holds the backward passes as plain operations
                return tuple(graph(*new))

        self._replay = replay
        return outputs[0]

    def _checked_replay(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The first replay, compared with the eager step from the same state."""
        assert self._replay is not None
        before = _copy(self.state())
        replayed = _copy(self._replay(inputs))
        after = _copy(self.state())
        _restore(self.state(), before)
        eager = self.step(*inputs)
        worst = max((_relative_difference(a, b) for a, b in
                     zip(after + replayed, list(self.state()) + list(eager))), default=0.0)
        self._checked = True
        if worst > VERIFY_TOLERANCE:  # this call's step is done (eagerly): no second run
            self._fall_back(CaptureError(f"the replayed step differs from the eager one by "
                                         f"{worst:.2g} of a value's range"))
        else:
            self.replays += 1
        return eager

    def _fall_back(self, exc: BaseException) -> None:
        self.failure = failure_line(exc)
        self._replay = None
        log.warning("capture of %s failed (%s); it runs eager", self.name, self.failure)


def _host_reads(graph: torch.fx.GraphModule) -> list[str]:
    """The recorded operations that hand a device value to the host (by operator name)."""
    names = {str(node.target).split(".")[1] for node in graph.graph.nodes
             if node.op == "call_function" and str(node.target).count(".") >= 1}
    return sorted(names & set(HOST_READS))


def _copy(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def _restore(tensors: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for t, s in zip(tensors, saved):
            t.copy_(s)


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    if not a.numel():
        return 0.0
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) / scale
