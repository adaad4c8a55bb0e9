"""Evaluation attacks by name, as ../shared/SPEC.md defines them (model in eval mode, L-inf)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from acdistill.attacks.pgd import ce_objective, cw_l2, cw_objective, fgsm, pgd
from acdistill.registry import Registry

# (model, x, y, eps) -> adversarial x
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class EvalAttack:
    name: str
    run: AttackFn
    description: str


EVAL_ATTACKS: Registry[EvalAttack] = Registry("attack")


def _add(name: str, description: str, run: AttackFn) -> None:
    EVAL_ATTACKS.register(name)(EvalAttack(name, run, description))


def _pgd_ce(steps: int, step_size: float, start: str) -> AttackFn:
    return lambda model, x, y, eps: pgd(ce_objective(model, y), x, eps=eps, step_size=step_size, steps=steps,
                                        start=start)


def _autoattack(version: str, attacks: list[str] | None = None) -> AttackFn:
    def run(model, x, y, eps):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, attacks=attacks, eps=eps, version=version, device=x.device, seed=0)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))  # (x_adv, predictions on x_adv)
        return x_adv

    return run


_add("natural", "clean accuracy", lambda model, x, y, eps: x)
_add("fgsm", "one signed-gradient step of size eps, no random start", lambda model, x, y, eps: fgsm(model, x, y, eps))
_add("pgd20", "PGD_SAT: CE, uniform start, step 2/255, 20 steps", _pgd_ce(20, 2 / 255, "uniform"))
_add("pgd7", "CE, uniform start, step 2/255, 7 steps", _pgd_ce(7, 2 / 255, "uniform"))
_add("pgd-trades", "CE, start x + 0.001 N(0,1), step 0.003, 20 steps", _pgd_ce(20, 0.003, "normal"))
_add("cw-inf", "PGD on the C&W margin loss (kappa 50), step 2/255, 30 steps",
     lambda model, x, y, eps: pgd(cw_objective(model, y), x, eps=eps, step_size=2 / 255, steps=30, start="uniform"))
_add("cw2", "C&W L2 (c 1, kappa 0, 100 Adam steps, lr 0.01); robust if it fails or needs L2 > 0.5; ignores eps",
     lambda model, x, y, eps: cw_l2(model, x, y))
_add("aa", "AutoAttack standard (apgd-ce, apgd-t, fab-t, square) through pyautoattack", _autoattack("standard"))
_add("aa-fast", "AutoAttack version custom: apgd-ce + apgd-t, through pyautoattack",
     _autoattack("custom", ["apgd-ce", "apgd-t"]))
