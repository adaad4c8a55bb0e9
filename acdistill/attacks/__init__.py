"""Attacks: PGD and its kin (pgd.py), the evaluation suite by name (suite.py), optimal transport (ot.py); importing
this package imports every module in it, so that a new module's `register_attack` calls are registered."""

from acdistill.attacks.pgd import ce_objective, cw_l2, cw_objective, fgsm, kl_objective, pgd
from acdistill.attacks.suite import EVAL_ATTACKS, EvalAttack, register_attack
from acdistill.budgets import Budget
from acdistill.registry import import_modules

import_modules(__name__, __path__)

__all__ = [
    "EVAL_ATTACKS",
    "Budget",
    "EvalAttack",
    "ce_objective",
    "cw_l2",
    "cw_objective",
    "fgsm",
    "kl_objective",
    "pgd",
    "register_attack",
]
