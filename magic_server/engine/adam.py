"""Adam whose step count and learning rate live on the device, so that one update can be
captured in a graph and replayed (engine/iteration_capture.py).

torch.optim.Adam keeps its step count on the host unless `capturable`, and its capturable form
runs on CUDA only, with other arithmetic than the host form. This one does the host form's
arithmetic exactly (the same pixels as torch.optim.Adam on the CPU, checked by a test) with the
host's numbers as 0-d float64 tensors: a captured update reads this iteration's learning rate and
step count instead of freezing the values they had when it was captured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Adam:
    """Adam over `params` (updated in place). `step(grads)` after `set_lr(value)`."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        device = self.params[0].device
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.lr = torch.tensor(float(lr), dtype=torch.float64, device=device)
        self.steps = torch.zeros((), dtype=torch.float64, device=device)
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                         for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                            for p in self.params]
        # two work buffers per parameter: a fresh large tensor each step costs more than the
        # arithmetic on the CPU (first-touch page faults)
        self.scratch = [(torch.empty_like(p), torch.empty_like(p)) for p in self.params]

    def set_lr(self, value: float) -> None:
        """Outside a captured graph: the next update's learning rate (no host sync)."""
        self.lr.fill_(value)

    @property
    def state(self) -> list[torch.Tensor]:
        """Every tensor an update writes besides the parameters."""
        return [self.steps, *self.exp_avgs, *self.exp_avg_sqs]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.steps.add_(1)
        bias_correction1 = 1 - self.beta1 ** self.steps
        neg_step_size = -(self.lr / bias_correction1)
        bias_correction2_sqrt = (1 - self.beta2 ** self.steps) ** 0.5
        for param, grad, exp_avg, exp_avg_sq, (denom, scaled) in zip(
                self.params, grads, self.exp_avgs, self.exp_avg_sqs, self.scratch):
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            torch.sqrt(exp_avg_sq, out=denom).div_(bias_correction2_sqrt).add_(self.eps)
            # addcdiv's value must be a host number: value * t1 / t2 with the value multiplied
            # in first (the same rounding), then divided by addcdiv with a value of 1
            torch.mul(exp_avg, neg_step_size.to(param.dtype), out=scaled)
            param.addcdiv_(scaled, denom)
