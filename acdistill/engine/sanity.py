"""Gradient-masking checks: the signs of a broken evaluation from Carlini et al. 2019 ("On Evaluating Adversarial
Robustness", sec. 5) and AutoAttack's own flags.

1. more_steps: accuracy under PGD must not rise as the steps grow (1, steps, steps x factor).
2. larger_eps: accuracy must not rise as eps grows (eps/2, eps, 2 eps).
3. whitebox_vs_square: white-box PGD must not be weaker than the black-box Square attack.
4. huge_eps: with an eps that covers the whole image space, accuracy must be about 0.

Every check attacks all of the first n examples, including those misclassified when clean: a gradient that
leads away from errors then shows up as accuracy rising with steps or eps, which the evaluation protocol
(only clean-correct examples are attacked) would hide. All PGD runs use CE, a uniform random start, the same
seed, and step 2.5 eps / steps, so that every run can cross the ball whatever its step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from acdistill.attacks import Budget, ce_objective, pgd
from acdistill.attacks.suite import crossing_step
from acdistill.data import ImageSet
from acdistill.engine.evaluate import correct_mask
from acdistill.errors import AcdistillError
from acdistill.untouched import leaves_model_untouched


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    accuracy: dict[str, float]  # the measurements the verdict rests on, in percent

    def as_dict(self) -> dict:
        return asdict(self)


def _pgd(steps: int) -> Callable:
    def run(model, x, y, budget: Budget):
        return pgd(
            ce_objective(model, y),
            x,
            eps=budget.eps,
            step_size=crossing_step(budget.eps, steps),
            steps=steps,
            start="uniform",
            norm=budget.norm,
        )

    return run


def _square(queries: int, seed: int) -> Callable:
    def run(model, x, y, budget: Budget):
        from pyautoattack.square import SquareAttack

        with torch.no_grad():
            return SquareAttack(
                model, norm=budget.norm, n_queries=queries, eps=budget.eps, seed=seed, device=x.device
            ).perturb(x, y)

    return run


def _trend(name: str, what: str, points: dict[str, float], tolerance: float) -> Check:
    values = list(points.values())
    passed = all(later <= earlier + tolerance for earlier, later in zip(values, values[1:]))
    trail = " -> ".join(f"{v:.1f}" for v in values)
    verdict = "never rises" if passed else "RISES"
    return Check(name, passed, f"accuracy {trail} % as {what} go {' -> '.join(points)}: {verdict}", points)


@leaves_model_untouched
def sanity_checks(
    model: nn.Module,
    data: ImageSet,
    budget: Budget,
    *,
    steps: int = 20,
    more_steps_factor: int = 5,
    square_queries: int = 1000,
    tolerance: float = 1.0,
    huge_eps_max_accuracy: float = 2.0,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Check]:
    """Run the four checks on every example of `data`; `tolerance` is in points. The model runs in eval mode and
    comes back as it was found (acdistill/untouched.py)."""
    if budget.eps <= 0:
        raise AcdistillError("the sanity checks need eps > 0")

    def accuracy(label: str, attack: Callable, b: Budget) -> float:
        step = (lambda k: progress(label, k, len(data))) if progress else None
        torch.manual_seed(seed)
        correct = correct_mask(model, data, attack, budget=b, batch_size=batch_size, device=device, on_batch=step)
        return round(100.0 * correct.float().mean().item(), 2)

    eps = budget.eps
    by_steps = {f"{s}": accuracy(f"sanity: PGD-{s}", _pgd(s), budget) for s in (1, steps, steps * more_steps_factor)}
    larger = min(2 * eps, 1.0) if budget.norm == "Linf" else 2 * eps
    by_eps = {
        f"{eps / 2:.4f}": accuracy(f"sanity: PGD-{steps} at eps/2", _pgd(steps), replace(budget, eps=eps / 2)),
        f"{eps:.4f}": by_steps[f"{steps}"],
        f"{larger:.4f}": accuracy(f"sanity: PGD-{steps} at 2 eps", _pgd(steps), replace(budget, eps=larger)),
    }
    white = by_steps[f"{steps}"]
    black = accuracy(f"sanity: Square ({square_queries} queries)", _square(square_queries, seed), budget)
    # L-inf eps 1 reaches every image; in L2 the diagonal of the unit cube does.
    huge = 1.0 if budget.norm == "Linf" else math.sqrt(data.images[0].numel())
    at_huge = accuracy(f"sanity: PGD-{steps} at eps {huge:g}", _pgd(steps), replace(budget, eps=huge))
    return [
        _trend("more_steps", "steps", by_steps, tolerance),
        _trend("larger_eps", "eps", by_eps, tolerance),
        Check(
            "whitebox_vs_square",
            white <= black + tolerance,
            f"PGD-{steps} {white:.1f} % vs Square {black:.1f} %: "
            + ("white-box is at least as strong" if white <= black + tolerance else "black-box is STRONGER"),
            {f"pgd{steps}": white, "square": black},
        ),
        Check(
            "huge_eps",
            at_huge <= huge_eps_max_accuracy,
            f"PGD-{steps} at eps {huge:g} leaves {at_huge:.1f} % (at most {huge_eps_max_accuracy:g} % allowed)",
            {f"eps {huge:g}": at_huge},
        ),
    ]
