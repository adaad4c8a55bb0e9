"""Accuracy under attack: the loop shared by `attack-eval` and the trainer's per-epoch monitor."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from acdistill.attacks import EVAL_ATTACKS
from acdistill.attacks.pgd import require_autograd
from acdistill.attacks.suite import AttackFn, EvalAttack
from acdistill.budgets import Budget, eps_text
from acdistill.data import ImageSet, iterate, unit_images
from acdistill.errors import AcdistillError, warn
from acdistill.stats import pack_bits, wilson
from acdistill.untouched import leaves_model_untouched


@leaves_model_untouched
def correct_mask(
    model: nn.Module,
    data: ImageSet,
    attack: AttackFn,
    *,
    budget: Budget,
    batch_size: int,
    device: torch.device | str,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Boolean [N]: whether the model, in eval mode, classifies each attacked example correctly."""
    out = []
    for batch in iterate(data, batch_size, device=device):
        x_adv = attack(model, batch.x, batch.y, budget)
        with torch.inference_mode():
            out.append((model(x_adv).argmax(1) == batch.y).cpu())
        if on_batch:
            on_batch(len(batch))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def images_digest(indices: torch.Tensor) -> str:
    """Which images a result covers, as a short digest of their dataset indices: two results with the same digest
    were measured on the same images, so that their per-image results can be paired."""
    return hashlib.sha256(indices.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]


def summarize(
    correct: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, num_classes: int, seconds: float
) -> dict:
    """One attack's result. per_class is a list indexed by class (None where the subset has no example of it): a
    list, so that `dvc metrics show` keeps to the scalar columns. ci95 is Wilson's 95 % interval over the n
    images, in percent; `correct` the per-image results (acdistill.stats.pack_bits) of the images `images` names,
    which paired comparisons read."""
    per_class = [
        round(100.0 * correct[labels == c].float().mean().item(), 2) if (labels == c).any() else None
        for c in range(num_classes)
    ]
    present = [a for a in per_class if a is not None]
    n = int(len(correct))
    return {
        "accuracy": round(100.0 * correct.float().mean().item(), 2) if n else 0.0,
        "ci95": wilson(int(correct.sum()), n).percent() if n else None,
        "per_class": per_class,
        "worst_class": min(present) if present else 0.0,
        "n": n,
        "seconds": round(seconds, 2),
        "images": images_digest(indices),
        "correct": pack_bits(correct.cpu().numpy()),
    }


def first_n(data: ImageSet, n: int | None) -> ImageSet:
    if n is None:
        return data
    if n > len(data):
        raise AcdistillError(f"--n {n} is larger than the test set ({len(data)} images)")
    return data.take(n)


@leaves_model_untouched
def check_model_outputs(model: nn.Module, data: ImageSet, device: torch.device | str) -> None:
    """Refuse a model whose class count is not the dataset's; warn, once, of a randomized model: one whose outputs
    differ between two calls on the same images in eval mode (as AutoAttack's `check_randomized` does). Attacks
    without expectation over transformation (EOT) overestimate such a model's robustness (Athalye et al. 2018)."""
    x = unit_images(data.images[:32].to(device))
    with torch.no_grad():
        first, second = model(x), model(x)
    if first.shape[1] != data.num_classes:
        raise AcdistillError(f"model has {first.shape[1]} outputs but {data.name} has {data.num_classes} classes")
    # GPU kernels may differ in the last bits between calls; a randomized defense differs far more
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        warn(
            "the model's outputs differ between two calls on the same images (max difference "
            f"{(first - second).abs().max().item():.3g}): it is randomized, and attacks without EOT overestimate its "
            "robustness (AutoAttack's version='rand' averages gradients over 20 draws)"
        )


@leaves_model_untouched
def evaluate(
    model: nn.Module,
    data: ImageSet,
    attacks: list[str],
    *,
    budget: Budget = Budget(),
    batch_size: int = 256,
    n: int | None = None,
    limits: dict[str, int] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict]:
    """Evaluate `model` on the first `n` examples of `data` under each named attack (acdistill attacks lists them).

    As AutoAttack does, an attack runs only on the examples the model classifies correctly when clean; the
    others count as not robust. Returns {attack: {accuracy (percent), ci95 (Wilson's 95 % interval over the n
    images, percent), per_class, worst_class, n, seconds, steps, images, correct}}
    plus "all_attacks" when more than one attack ran: an example counts there only if it is classified correctly
    under every attack run. `limits` runs a costly attack on only the first N of the n examples
    ({"aa-fast": 500}); its entry and "all_attacks" then cover those N.

    The model runs in eval mode and comes back as it was found: its train/eval mode, batch-norm statistics and
    gradients are untouched (acdistill/untouched.py). Everything random (a randomized model's clean predictions
    too) is seeded from `seed`, and the caller's random state is left as it was. Works under torch.no_grad();
    attacks other than natural raise AcdistillError under torch.inference_mode(). A model whose outputs change
    between two identical calls gets a warning (see `check_model_outputs`).
    """
    specs = [EVAL_ATTACKS.get(name) for name in attacks]
    for spec in specs:
        spec.check(budget)
    if any(spec.name != "natural" for spec in specs):
        require_autograd("evaluate")
    data = first_n(data, n)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        check_model_outputs(model, data, device)
        return _attacked(model, data, specs, budget, batch_size, limits, seed, device, progress)


def _attacked(
    model: nn.Module,
    data: ImageSet,
    specs: list[EvalAttack],
    budget: Budget,
    batch_size: int,
    limits: dict[str, int] | None,
    seed: int,
    device: torch.device | str,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, dict]:
    """evaluate's body, inside its seeded random state."""
    natural = EVAL_ATTACKS.get("natural")
    start = time.perf_counter()
    clean = correct_mask(model, data, natural.run, budget=budget, batch_size=batch_size, device=device)
    clean_seconds = time.perf_counter() - start
    results: dict[str, dict] = {}
    robust_all = clean.clone()
    for spec in specs:
        m = min((limits or {}).get(spec.name, len(data)), len(data))
        if spec is natural:
            correct, seconds = clean, clean_seconds
        else:
            torch.manual_seed(seed)
            start = time.perf_counter()
            still_correct = data.take(m).select(clean[:m])
            step = (lambda k, name=spec.name, total=len(still_correct): progress(name, k, total)) if progress else None
            if step and len(still_correct):
                step(0)  # shown from its start: one batch of a costly attack can take minutes
            correct = clean[:m].clone()
            correct[clean[:m]] = correct_mask(
                model, still_correct, spec.run, budget=budget, batch_size=batch_size, device=device, on_batch=step
            )
            seconds = time.perf_counter() - start
        results[spec.name] = summarize(correct, data.labels[:m], data.indices[:m], data.num_classes, seconds)
        if spec.steps is not None:
            results[spec.name]["steps"] = spec.steps_for(budget)
        k = min(len(robust_all), m)
        robust_all = robust_all[:k] & correct[:k]
    if len(specs) > 1:
        k = len(robust_all)
        seconds = sum(r["seconds"] for r in results.values())
        results["all_attacks"] = summarize(robust_all, data.labels[:k], data.indices[:k], data.num_classes, seconds)
    return results


def eps_sweep(
    model: nn.Module,
    data: ImageSet,
    attack: str,
    eps_values: list[float],
    *,
    budget: Budget = Budget(),
    progress: Callable[[str, int, int], None] | None = None,
    **kwargs,
) -> list[dict]:
    """Accuracy under `attack` at each eps, by the `evaluate` protocol (so the point at the evaluation's eps equals
    its table entry on the same examples): rows {eps, accuracy} as DVC plots read them. kwargs go to `evaluate`."""
    rows = []
    for eps in eps_values:
        label = f"at eps {eps_text(eps, budget.norm)}"
        step = (lambda name, k, total, label=label: progress(f"{name} {label}", k, total)) if progress else None
        result = evaluate(model, data, [attack], budget=replace(budget, eps=eps), progress=step, **kwargs)
        rows.append({"eps": round(eps, 6), "accuracy": result[attack]["accuracy"]})
    return rows
