"""Evaluation attacks by name, L-inf by default; each one's protocol is in its description below. Each one runs the
model in eval mode and gives it back as it found it (acdistill/untouched.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from acdistill import progress
from acdistill.attacks.pgd import ce_objective, cw_l2, cw_objective, fgsm, pgd, require_autograd
from acdistill.budgets import NORMS, Budget, Norm
from acdistill.data.datasets import check_images
from acdistill.errors import AcdistillError
from acdistill.registry import Registry
from acdistill.untouched import leaves_model_untouched

# (model, x, y, budget) -> adversarial x
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Budget], torch.Tensor]


@dataclass(frozen=True)
class EvalAttack:
    name: str
    run: AttackFn
    description: str
    steps: int | None = None  # the default iteration count; None: not iterative, or a fixed protocol
    norms: tuple[Norm, ...] = NORMS

    def steps_for(self, budget: Budget) -> int | None:
        return budget.steps if self.steps is not None and budget.steps is not None else self.steps

    def check(self, budget: Budget) -> None:
        if budget.norm not in self.norms:
            raise AcdistillError(f"attack '{self.name}' is defined for {', '.join(self.norms)} only, not {budget.norm}")


EVAL_ATTACKS: Registry[EvalAttack] = Registry("attack")


def register_attack(
    name: str, description: str, run: AttackFn, steps: int | None = None, norms: tuple[Norm, ...] = NORMS
) -> EvalAttack:
    """Add an evaluation attack: `run(model, x, y, budget)` returns the adversarial x; `eval.attacks` then takes
    `name`. It runs on checked inputs, with gradients on, and leaves the model's mode and weights as they were."""
    attack = EvalAttack(name, leaves_model_untouched(_guarded(name, run)), description, steps, norms)
    return EVAL_ATTACKS.register(name)(attack)


def _guarded(name: str, run: AttackFn) -> AttackFn:
    """`run` on inputs checked to be images in [0, 1], with gradients on even under torch.no_grad() (pyautoattack's
    FAB and a model's own code may not turn them on), and refused in one line under torch.inference_mode()."""
    if name == "natural":
        return run

    def guarded(model, x, y, budget):
        require_autograd(f"attack '{name}'")
        check_images(x, f"attack '{name}': inputs")
        with torch.enable_grad():
            return run(model, x, y, budget)

    return guarded


def crossing_step(eps: float, steps: int) -> float:
    """2.5 eps / steps, the `robustness` library's rule: `steps` steps can cross the ball whatever its size. L2 PGD
    uses it (PGD-20's 2/255 is an L-inf step), and so do the masking checks, which vary steps and eps."""
    return 2.5 * eps / steps


def _pgd_ce(default_steps: int, linf_step: float, start: str) -> AttackFn:
    def run(model, x, y, budget: Budget):
        steps = budget.steps or default_steps
        step = linf_step if budget.norm == "Linf" else crossing_step(budget.eps, steps)
        return pgd(
            ce_objective(model, y), x, eps=budget.eps, step_size=step, steps=steps, start=start, norm=budget.norm
        )

    return run


def with_iterations(apgd, n_iter: int):
    """A copy of pyautoattack's APGD attack `apgd` (untargeted or targeted) built for `n_iter` iterations.

    APGD fixes its step-size schedule when it is built (Croce & Hein 2020, sec. 3.2; `autopgd_base.py` of
    pyautoattack): the step halves, where progress stalled, at checkpoints whose spacing starts at 22 % of the
    iterations and shrinks by 3 % of them at each checkpoint, down to 6 %. Setting `n_iter` on a built attack would
    keep the checkpoints of its old count: at 10 iterations those of 100, whose first one (iteration 22) never
    comes, so the step would never halve.
    """
    from pyautoattack.autopgd_base import APGDAttack_targeted

    # APGD keeps each argument it was built with as the attribute of that name, but for rho (kept as thr_decr)
    kept = ("norm", "n_restarts", "eps", "seed", "eot_iter", "device", "logger")
    common = {name: getattr(apgd, name) for name in kept} | {"n_iter": n_iter, "rho": apgd.thr_decr}
    if isinstance(apgd, APGDAttack_targeted):
        return APGDAttack_targeted(apgd.model, n_target_classes=apgd.n_target_classes, **common)
    return type(apgd)(apgd.model, loss=apgd.loss, **common)


class _StageNotes(logging.Handler):
    """pyautoattack's "running apgd-ce" log records, as the stage shown beside the attack's progress."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("running "):
            progress.note(message.removeprefix("running "))


@contextmanager
def _stages_shown(logger: logging.Logger) -> Iterator[None]:
    """pyautoattack logs its stages at DEBUG, and only to its own logger: shown as notes, not printed."""
    handler, level, propagate = _StageNotes(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _autoattack(version: str, attacks: list[str] | None = None) -> AttackFn:
    def run(model, x, y, budget: Budget):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(
            model, attacks=attacks, eps=budget.eps, norm=budget.norm, version=version, device=x.device, seed=0
        )
        if version == "custom" and budget.steps is not None:
            adversary.apgd = with_iterations(adversary.apgd, budget.steps)
            adversary.apgd_targeted = with_iterations(adversary.apgd_targeted, budget.steps)
        with _stages_shown(adversary.logger):
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))  # (x_adv, predictions on x_adv)
        return x_adv

    return run


register_attack("natural", "clean accuracy", lambda model, x, y, budget: x)
register_attack(
    "fgsm",
    "one signed-gradient step of size eps, no random start (L2: along the normalized gradient)",
    lambda model, x, y, budget: fgsm(model, x, y, budget.eps, budget.norm),
)
register_attack("pgd20", "PGD_SAT: CE, uniform start, step 2/255, 20 steps", _pgd_ce(20, 2 / 255, "uniform"), steps=20)
register_attack("pgd7", "CE, uniform start, step 2/255, 7 steps", _pgd_ce(7, 2 / 255, "uniform"), steps=7)
register_attack(
    "pgd-trades", "CE, start x + 0.001 N(0,1), step 0.003, 20 steps", _pgd_ce(20, 0.003, "normal"), steps=20
)
register_attack(
    "cw-inf",
    "PGD on the C&W margin loss (kappa 50), step 2/255, 30 steps",
    lambda model, x, y, budget: pgd(
        cw_objective(model, y), x, eps=budget.eps, step_size=2 / 255, steps=budget.steps or 30, start="uniform"
    ),
    steps=30,
    norms=("Linf",),
)
register_attack(
    "cw2",
    "C&W L2 (c 1, kappa 0, 100 Adam steps, lr 0.01); robust if it fails or needs L2 > 0.5; ignores eps",
    lambda model, x, y, budget: cw_l2(model, x, y, steps=budget.steps or 100),
    steps=100,
)
register_attack(
    "aa",
    "AutoAttack standard (apgd-ce, apgd-t, fab-t, square) through pyautoattack; a fixed protocol",
    _autoattack("standard"),
)
register_attack(
    "aa-fast",
    "AutoAttack version custom through pyautoattack: apgd-ce with 5 restarts + apgd-t on 9 target classes, "
    "100 iterations each",
    _autoattack("custom", ["apgd-ce", "apgd-t"]),
    steps=100,
)
