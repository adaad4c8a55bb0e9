"""L-inf projected gradient ascent, shared by training (inner maximization) and evaluation.

Every attack works in pixel space on inputs in [0, 1] (normalization lives inside the models) and projects onto
the eps-ball and [0, 1] after every step.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

Objective = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> scalar to maximize
Start = Literal["uniform", "normal", "none"]


def pgd(objective: Objective, x: torch.Tensor, *, eps: float, step_size: float, steps: int,
        start: Start = "uniform", normal_std: float = 0.001) -> torch.Tensor:
    """Maximize ``objective`` over the L-inf ball of radius ``eps`` around ``x`` with signed-gradient steps.

    start: "uniform" in [-eps, eps] (Madry), "normal" = x + normal_std * N(0, 1) (TRADES, RSLAD), "none" = x.
    Only the input gets a gradient, so the parameters' .grad stay untouched.
    """
    x = x.detach()
    if start == "uniform":
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    elif start == "normal":
        x_adv = x + normal_std * torch.randn_like(x)
    elif start == "none":
        x_adv = x.clone()
    else:
        raise ValueError(f"unknown PGD start '{start}'")
    x_adv = _project(x_adv, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x_adv), x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


def ce_objective(model: nn.Module, y: torch.Tensor) -> Objective:
    return lambda x_adv: F.cross_entropy(model(x_adv), y, reduction="sum")


def kl_objective(model: nn.Module, reference_logits: torch.Tensor) -> Objective:
    """KL(softmax(reference) || softmax(model(x_adv))), summed: the TRADES / RSLAD inner loss."""
    target = F.softmax(reference_logits.detach(), dim=1)
    return lambda x_adv: F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")


def cw_objective(model: nn.Module, y: torch.Tensor, kappa: float = 50.0) -> Objective:
    """C&W margin loss, -max(z_y - max_{j!=y} z_j + kappa, 0), summed: the `cwloss` of the TRADES/RSLAD code."""

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        logits = model(x_adv)
        onehot = F.one_hot(y, logits.shape[1]).bool()
        true = logits[onehot]
        other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
        return -torch.clamp(true - other + kappa, min=0).sum()

    return objective


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return pgd(ce_objective(model, y), x, eps=eps, step_size=eps, steps=1, start="none")
