from acdistill.attacks.pgd import ce_objective, cw_l2, cw_objective, fgsm, kl_objective, pgd
from acdistill.attacks.suite import EVAL_ATTACKS, EvalAttack, register_attack
from acdistill.budgets import Budget

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
