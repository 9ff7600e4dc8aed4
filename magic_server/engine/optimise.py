"""The optimisation loop: one level of an edit, iteration by iteration.

An iteration: the critic's step (once it has joined), the patch matching (every
`refresh_every` iterations) with the terms' balance, the update of x' (its terms, their
gradient, Adam, the clamp), then the report and the previews. The critic's step and the update
read only tensors that stay in place, so that a level may run them captured whole
(engine/iteration_capture.py, chosen by LevelSteps)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from magic_server.engine import capture, losses, term_balance
from magic_server.engine.adam import Adam
from magic_server.engine.api import Progress
from magic_server.engine.discriminator import CriticTrainer
from magic_server.engine.edit_plan import EditRun, Level, Reference, compose
from magic_server.engine.iteration_capture import CapturedStep
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.mask_net import MaskNet
from magic_server.engine.patch_nn import patch_loss
from magic_server.engine.presets import learning_rate
from magic_server.engine.previews import PreviewCopies
from magic_server.engine.tensors import Normaliser, preview_size

CRITIC_WARM_START_STEPS = 10
LOSS_REPORT_EVERY = 10


def seen_by_judge(x: torch.Tensor, judge: Reference) -> torch.Tensor:
    """x' as the classifier sees it: at the working resolution."""
    if x.shape[-2:] == judge.z.shape[-2:]:
        return x
    return F.interpolate(x, size=judge.z.shape[-2:], mode="bilinear",
                         antialias=x.shape[-1] > judge.z.shape[-1], align_corners=False)


class EditOptimiser:
    """Runs an edit's levels (`run_level`) on the engine's device. The judged part (the
    classifier and the mask network) is the edit's own `run.judge`; `on_scales` hears each
    balance of the terms (Engine.last_scales)."""

    def __init__(self, run: EditRun, device: torch.device, norm: Normaliser,
                 autocast: Callable[[], contextlib.AbstractContextManager], capture_mode: str,
                 on_scales: Callable[[term_balance.TermScales], None]) -> None:
        self.run, self.device, self.norm = run, device, norm
        self._autocast = autocast
        self.capture_mode = capture_mode
        self.on_scales = on_scales

    def run_level(self, z: torch.Tensor, level: Level, mask_net: MaskNet | None,
                  field: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """Run one level; `field` is the patch match field to search around (patch term).
        Returns x' (detached), the latest report of the terms, and the match field."""
        run = self.run
        z = z.detach().clone().requires_grad_(True)
        schedule = level.schedule
        paper = level.free is None
        opt = Adam([z], lr=level.peak_lr, betas=(0.5, 0.9) if paper else (0.9, 0.99), eps=1e-8)
        critic = CriticTrainer(level.ref.z, run.gen) if run.weights.critic > 0 else None
        steps = LevelSteps(self, z, opt, level, mask_net, critic)
        report: dict[str, float] = {}
        matches = None
        jw, measured = run.weights, None  # jw: the weights in force (relative: rescaled)
        copies = PreviewCopies(self.device)
        wasserstein = None
        for it in range(schedule.iterations):
            run.check_cancel()
            opt.set_lr(learning_rate(it, schedule, level.peak_lr))
            critic_on = critic is not None and it >= schedule.discriminator_start
            if critic_on:
                wasserstein = self._critic_steps(steps, critic, z,
                                                 it == schedule.discriminator_start)
            if level.bank is not None and it % level.refresh_every == 0:
                x, matches = self._match(z, level, field)
                field = matches.field
                if run.weights.relative:
                    jw, measured = self.balance(z, x, level, matches, run.weights)
            matched = (matches.target, matches.covered) if matches is not None else ()
            terms, loss = steps.update(critic_on, matched, jw, measured)
            measured = None
            run.done += 1
            last_of_level = it + 1 == schedule.iterations
            fresh = self._report(terms, loss, wasserstein if critic_on else None, last_of_level)
            if fresh:
                report = fresh
            self._preview(z, level, copies, fresh, last_of_level)
        run.captures.append(steps.record())
        return z.detach(), report, field

    # -- the iteration's named steps ------------------------------------------------------

    @staticmethod
    def _critic_steps(steps: LevelSteps, critic: CriticTrainer, z: torch.Tensor,
                      joining: bool) -> torch.Tensor:
        """The critic's steps on x' (a warm start when it joins); its Wasserstein estimate."""
        wasserstein = None
        for _ in range(CRITIC_WARM_START_STEPS if joining else 1):
            wasserstein = steps.critic(*critic.draw(z.shape))
        return wasserstein

    def _match(self, z: torch.Tensor, level: Level, field: torch.Tensor | None):
        """x' now, and its patches matched to the bank's (around the previous `field`)."""
        x = compose(z, level)
        matches = level.bank.match(x.detach(), level.labels, level.centres, blurred=True,
                                   prior=field, agree=level.agree)
        return x, matches

    def _report(self, terms: dict[str, torch.Tensor], loss: torch.Tensor,
                wasserstein: torch.Tensor | None, last_of_level: bool) -> dict[str, float]:
        """The terms' values every LOSS_REPORT_EVERY iterations and at a level's end (the only
        place the loop reads values back from the device), else {}."""
        if self.run.done % LOSS_REPORT_EVERY and not last_of_level:
            return {}
        fresh = {k: float(v) for k, v in terms.items()}
        fresh["total"] = float(loss)
        if wasserstein is not None:
            fresh["wasserstein"] = float(wasserstein)
        return fresh

    def _preview(self, z: torch.Tensor, level: Level, copies: PreviewCopies,
                 fresh: dict[str, float], last_of_level: bool) -> None:
        """Progress to the caller, with preview frames every `preview_every` iterations."""
        run, options = self.run, self.run.options
        if run.on_progress is None:
            return
        h, w = z.shape[-2:]
        if options.preview_every and (run.done % options.preview_every == 0
                                      or run.done == run.total):
            copies.start(self.norm.pixels(compose(z, level)),
                         preview_size(h, w, options.preview_size))
        previews = copies.collect(wait=last_of_level)
        run.on_progress(Progress(run.done, run.total, time.monotonic() - run.t0, fresh,
                                 previews, stage=level.stage))

    # -- the update of x' -----------------------------------------------------------------

    def update(self, z: torch.Tensor, opt: Adam, level: Level, mask_net: MaskNet | None,
               critic: CriticTrainer | None, jw: LossWeights, target: torch.Tensor | None = None,
               covered: torch.Tensor | None = None, measured: tuple | None = None
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One update of x': its terms (the patch term from the matched `target` and `covered`),
        their gradient, Adam's step and the clamp to valid pixels. Returns the terms' values
        and their weighted total, as detached tensors. Asks the host for nothing: a level may
        capture it whole."""
        x = compose(z, level)
        extra = {"measured": measured} if measured is not None else {}
        terms, surrogate = self.objective(x, level, mask_net, critic, jw, **extra)
        if target is not None:
            terms["patch"] = patch_loss(x, target, covered, level.free)
        live = [getattr(jw, k) * v for k, v in terms.items() if v.requires_grad]
        if surrogate is not None:
            live.append(surrogate)
        loss = sum(getattr(jw, k) * v.detach().float() for k, v in terms.items())
        if live:
            (gradient,) = torch.autograd.grad(sum(live), [z])
            opt.step([gradient])
        with torch.no_grad():
            self.norm.clamp_(z)
        return {k: v.detach() for k, v in terms.items()}, loss.detach()

    def balance(self, z: torch.Tensor, x: torch.Tensor, level: Level, matches,
                weights: LossWeights) -> tuple[LossWeights, tuple | None]:
        """The weights that give the judged terms their shares of the patch term's pull, from
        gradient norms measured now on the free pixels (engine/term_balance.py), and this
        iteration's judged (values, gradient), already computed for the measurement."""
        shares = weights.shares()
        if not any(shares.values()):
            return weights, None
        seen = seen_by_judge(x, level.judge)

        def back(gradient: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad((seen * gradient).sum(), z, retain_graph=True)[0]

        values, grads, norms = term_balance.measure(self.run.judge, seen.detach(), level.judge,
                                                    weights, back, shares)
        patch = weights.patch * patch_loss(x, matches.target, matches.covered, level.free)
        patch_norm = float(torch.autograd.grad(patch, z, retain_graph=True)[0].float().norm())
        scales = term_balance.balance(shares, norms, patch_norm)
        self.on_scales(scales)
        jw = replace(weights, classifier=scales.classifier, feature_stats=scales.feature_stats)
        if weights.mask:  # the mask network's term is not in the measured gradient
            return jw, None
        gradient = sum(getattr(scales, k) * g for k, g in grads.items())
        return jw, (values, gradient)

    def objective(self, x: torch.Tensor, level: Level, mask_net: MaskNet | None,
                  critic: CriticTrainer | None, jw: LossWeights, measured: tuple | None = None
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The terms of this level (terms whose weight is 0 are not computed) and the judged
        part's surrogate: the classifier and mask network judge x' through the edit's
        `run.judge`, which returns their values (detached, for the report) and their weighted
        gradient with respect to what they saw; (seen * gradient).sum() carries that gradient
        back to x'. measured: that (values, gradient), already computed (balance)."""
        judge = level.judge
        terms: dict[str, torch.Tensor] = {}
        surrogate = None
        if measured is not None or jw.classifier or jw.feature_stats or jw.mask:
            seen = seen_by_judge(x, judge)
            judged, gradient = measured or self.run.judge(seen.detach(), judge, mask_net, jw)
            terms.update(judged)
            surrogate = (seen * gradient).sum()
        with self._autocast():
            if jw.tv_l1:
                terms["tv_l1"] = losses.total_variation_l1(x)
            if jw.tv_l2:
                terms["tv_l2"] = losses.total_variation_l2(x)
            if jw.l2:
                terms["l2"] = losses.l2_prior(x)
            if jw.keep and level.free is None:
                terms["keep"] = losses.keep_loss(x, level.ref.z, level.ref.keep)
            if critic is not None:
                terms["critic"] = critic.generator_loss(x)
        return terms, surrogate


class LevelSteps:
    """The critic's step and the update of x' for one level, eager or captured whole as the
    capture mode decides (engine/capture.py); `record()` says how they ran."""

    def __init__(self, optimiser: EditOptimiser, z: torch.Tensor, opt: Adam, level: Level,
                 mask_net: MaskNet | None, critic: CriticTrainer | None) -> None:
        choice = capture.decide(optimiser.capture_mode, optimiser.device,
                                level.schedule.iterations)
        weights = optimiser.run.weights
        if choice.how == "graph":
            blocker = None
            if weights.smoothing:
                blocker = "the judged gradient is smoothed with noise drawn on the host"
            elif weights.relative and any(weights.shares().values()):
                blocker = "the judged terms are re-weighted at every patch matching"
            if blocker:
                choice = capture.Choice("eager", f"{choice.reason}; eager: {blocker}")
        capture.log.debug("level %s: %s (%s)", tuple(z.shape[-2:]), choice.how, choice.reason)
        self.choice = choice
        self.optimiser, self.z, self.opt, self.level = optimiser, z, opt, level
        self.mask_net, self.critic_trainer, self.weights = mask_net, critic, weights
        self.keys: dict[str, list[str]] = {}
        self.captured: dict[str, CapturedStep] = {}

    def critic(self, index: torch.Tensor, floats: torch.Tensor) -> torch.Tensor:
        """One critic step on x' with this step's random draw; its Wasserstein estimate."""
        trainer = self.critic_trainer
        assert trainer is not None
        return self._run("critic", lambda i, f: (trainer.update(self.z, i, f),),
                         lambda: trainer.state, (index, floats))[0]

    def update(self, critic_on: bool, matched: tuple[torch.Tensor, ...], weights: LossWeights,
               measured: tuple | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The update of x' (EditOptimiser.update) with the latest matching's (target,
        covered). Weights rescaled at this matching, or judged values it measured, are this
        iteration's own: that update runs eager."""
        name = "update with critic" if critic_on else "update"
        critic = self.critic_trainer if critic_on else None
        if measured is not None or weights is not self.weights:
            return self.optimiser.update(self.z, self.opt, self.level, self.mask_net, critic,
                                         weights, *matched, measured=measured)

        def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            terms, loss = self.optimiser.update(self.z, self.opt, self.level, self.mask_net,
                                                critic, self.weights, *tensors)
            self.keys[name] = list(terms)
            return (*terms.values(), loss)

        out = self._run(name, step, lambda: [self.z, *self.opt.state], matched)
        return dict(zip(self.keys[name], out[:-1])), out[-1]

    def _run(self, name: str, step, state, inputs: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, ...]:
        if self.choice.how != "graph":
            return step(*inputs)
        runner = self.captured.get(name)
        if runner is None:
            runner = self.captured[name] = CapturedStep(step, state, self.choice.backend, name)
        return runner(*inputs)

    def record(self) -> dict:
        return {"size": list(self.z.shape[-2:]), "how": self.choice.how,
                "reason": self.choice.reason, "backend": self.choice.backend,
                "steps": {name: {"replays": r.replays, "failure": r.failure}
                          for name, r in self.captured.items()}}
