"""Projected gradient ascent (L-inf or L2), shared by training (inner maximization) and evaluation.

Every attack works in pixel space on inputs in [0, 1] (normalization lives inside the models) and projects onto
the eps-ball and [0, 1] after every step. The attacks that take a model (`fgsm`, `cw_l2`) run it in eval mode and
give it back as they found it (acdistill/untouched.py); `pgd` takes an objective, so that a training method can
attack its student in the mode its reference code uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from acdistill.budgets import NORMS, Norm
from acdistill.data.datasets import check_images
from acdistill.errors import AcdistillError
from acdistill.losses import kl_rows
from acdistill.untouched import leaves_model_untouched

Objective = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> scalar to maximize
Start = Literal["uniform", "normal", "none"]


def require_autograd(what: str) -> None:
    """Refuse, in one line, to attack inside torch.inference_mode(): an attack needs the input's gradient, and
    torch.enable_grad() (which each attack takes, so that torch.no_grad() around it is fine) cannot undo
    inference mode."""
    if torch.is_inference_mode_enabled():
        raise AcdistillError(
            f"{what} needs gradients, which torch.inference_mode() turns off for good: call it outside "
            "inference_mode (torch.no_grad() around it is fine)"
        )


def pgd(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: Start = "uniform",
    normal_std: float = 0.001,
    norm: Norm = "Linf",
) -> torch.Tensor:
    """Maximize ``objective`` over the ``norm`` ball of radius ``eps`` around ``x``.

    L-inf takes signed-gradient steps (Madry); L2 takes steps along the gradient scaled to L2 length
    ``step_size`` (as the `robustness` library and torchattacks.PGDL2 do).
    start: "uniform" in the ball (L-inf: each pixel in [-eps, eps]; L2: a uniformly random direction and radius),
    "normal" = x + normal_std * N(0, 1) (TRADES, RSLAD), "none" = x.
    Only the input gets a gradient, so the parameters' .grad stay untouched. Works under torch.no_grad(); raises
    AcdistillError under torch.inference_mode(). `x` must be in [0, 1]: unlike the evaluation attacks, pgd does not
    check it, since training calls it at every step (a check would wait for the GPU, and breaks graph capture).
    """
    require_autograd("PGD")
    if norm not in NORMS:
        raise ValueError(f"unknown norm '{norm}'; choose from {', '.join(NORMS)}")
    x = x.detach()
    if start == "uniform":
        if norm == "Linf":
            x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
        else:
            radius = eps * torch.rand(len(x), *([1] * (x.dim() - 1)), device=x.device)
            x_adv = x + radius * _unit_l2(torch.randn_like(x))
    elif start == "normal":
        x_adv = x + normal_std * torch.randn_like(x)
    elif start == "none":
        x_adv = x.clone()
    else:
        raise ValueError(f"unknown PGD start '{start}'")
    x_adv = _project(x_adv, x, eps, norm)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x_adv), x_adv)
        direction = grad.sign() if norm == "Linf" else _unit_l2(grad)
        x_adv = _project(x_adv.detach() + step_size * direction, x, eps, norm)
    return x_adv.detach()


def _unit_l2(v: torch.Tensor) -> torch.Tensor:
    """Each example of ``v`` scaled to L2 length 1 (a zero gradient stays zero)."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm = "Linf") -> torch.Tensor:
    if norm == "Linf":
        return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)
    delta = x_adv - x
    length = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return torch.clamp(x + delta * torch.clamp(eps / length.clamp_min(1e-12), max=1.0), 0.0, 1.0)


def ce_objective(model: nn.Module, y: torch.Tensor) -> Objective:
    return lambda x_adv: F.cross_entropy(model(x_adv), y, reduction="sum")


def kl_objective(model: nn.Module, reference_logits: torch.Tensor) -> Objective:
    """KL(softmax(reference) || softmax(model(x_adv))), summed: the TRADES / RSLAD inner loss."""
    target = reference_logits.detach()
    return lambda x_adv: kl_rows(target, model(x_adv)).sum()


def cw_objective(model: nn.Module, y: torch.Tensor, kappa: float = 50.0) -> Objective:
    """C&W margin loss, -max(z_y - max_{j!=y} z_j + kappa, 0), summed: the `cwloss` of the TRADES/RSLAD code."""

    return lambda x_adv: -torch.clamp(margin(model(x_adv), y) + kappa, min=0).sum()


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per example: negative once the example is misclassified."""
    onehot = F.one_hot(y, logits.shape[1]).bool()
    return logits[onehot] - logits.masked_fill(onehot, float("-inf")).amax(dim=1)


@leaves_model_untouched
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: Norm = "Linf") -> torch.Tensor:
    """One full step of length eps (L2: the fast gradient method along the normalized gradient). x: float [B, C, H, W]
    in [0, 1], else AcdistillError."""
    check_images(x, "fgsm inputs")
    return pgd(ce_objective(model, y), x, eps=eps, step_size=eps, steps=1, start="none", norm=norm)


@leaves_model_untouched
def cw_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    max_norm: float = 0.5,
) -> torch.Tensor:
    """Carlini & Wagner L2 (as torchattacks.CW, without its early stop): Adam on w with x' = (tanh(w) + 1) / 2,
    minimizing ||x' - x||^2 + c * max(z_y - max_{j!=y} z_j, -kappa). Returns, per example, the closest
    misclassified x' found if its L2 distance is at most `max_norm`, else x itself (the example counts as robust).
    Works under torch.no_grad(); raises AcdistillError under torch.inference_mode().
    """
    require_autograd("C&W L2")
    check_images(x, "C&W L2 inputs")
    x = x.detach()
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    best = x.clone()
    best_sq = torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(steps):
        with torch.enable_grad():
            x_adv = (torch.tanh(w) + 1) / 2
            sq = (x_adv - x).flatten(1).pow(2).sum(1)
            logits = model(x_adv)
            loss = sq.sum() + c * torch.clamp(margin(logits, y), min=-kappa).sum()
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        with torch.no_grad():
            better = (logits.argmax(1) != y) & (sq < best_sq)
            best_sq = torch.where(better, sq, best_sq)
            best[better] = x_adv[better]
    close_enough = best_sq <= max_norm**2
    return torch.where(close_enough[:, None, None, None], best, x).detach()
