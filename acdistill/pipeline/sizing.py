"""Sizing runs to a wall-clock budget: how long one epoch of a training section takes on this machine, an upper
bound on the time of an evaluation, and the most epochs that fit in the time left.

Epoch times are measured with the real trainer on the real training set, from random weights (a step's time does
not depend on them), and write nothing: after a warm-up (cuDNN's search, the step graph's eager steps and first
capture), two runs of a few steps each give the time per step (their slope) and the per-epoch cost of the monitor
and the step graph's capture (their intercept).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from acdistill.attacks import EVAL_ATTACKS, Budget
from acdistill.config import AftParams, EvalParams, Params, TrainParams
from acdistill.data import ImageSet, unit_images
from acdistill.engine import Trainer
from acdistill.pipeline.common import build_method

WARMUP_STEPS = 6  # the step graph runs 3 eager steps, captures the 4th and replays from the 5th
TIMED_STEPS = (4, 12)  # the two timed runs, in full batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(
    section: TrainParams,
    params: Params,
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    train: ImageSet,
    monitor: ImageSet | None,
    device: torch.device,
    steps: tuple[int, int] = TIMED_STEPS,
) -> float:
    """Seconds that one epoch of `section` over `train` takes on `device` with `params.speed`, monitor included:
    (time per step) x (the epoch's batches) + the per-epoch cost, from two timed runs of `steps` batches after
    WARMUP_STEPS (the longer run's mean step when noise hides the slope); an epoch no longer than the longer run is
    timed whole. `student` is trained in place and
    `teacher` used as the method's teacher (random weights do). Pass `train` already on `device`: each run would
    copy it there otherwise."""
    trainer = Trainer(
        build_method(section, student.to(device), teacher.to(device) if teacher is not None else None),
        section.model_copy(update={"epochs": 1}),
        seed=params.seed,
        device=device,
        speed=params.speed,
        label=f"timing {section.method}",
    )

    def timed(max_steps: int) -> float:
        _sync(device)
        start = time.perf_counter()
        trainer.fit(train, monitor, augment=params.data.augment, resume=False, max_steps=max_steps)
        _sync(device)
        return time.perf_counter() - start

    per_epoch = math.ceil(len(train) / section.batch_size)
    timed(min(WARMUP_STEPS, per_epoch))
    if per_epoch <= steps[1]:
        return timed(per_epoch)
    short, long = timed(steps[0]), timed(steps[1])
    if long <= short:  # noise larger than the extra steps (a loaded CPU): the longer run's mean step, an overestimate
        return long / steps[1] * per_epoch
    per_step = (long - short) / (steps[1] - steps[0])
    return max(0.0, short - per_step * steps[0]) + per_step * per_epoch


def pass_seconds(model: nn.Module, data: ImageSet, batch_size: int, device: torch.device, repeats: int = 5) -> float:
    """Seconds of one forward and backward pass (to the input, as attacks take it) of `model` in eval mode and fp32,
    as evaluation runs, on a batch of `batch_size` images of `data` (fewer if it has fewer): the median of
    `repeats` after two untimed passes."""
    model = model.to(device).eval()
    x = unit_images(data.images[:batch_size].to(device)).requires_grad_(True)
    y = data.labels[:batch_size].to(device)

    def one_pass() -> float:
        _sync(device)
        start = time.perf_counter()
        torch.autograd.grad(F.cross_entropy(model(x), y), x)
        _sync(device)
        return time.perf_counter() - start

    for _ in range(2):
        one_pass()
    return statistics.median(one_pass() for _ in range(repeats))


def attack_passes(name: str, budget: Budget) -> int:
    """Forward-backward passes an attack takes per image at most, attacking every image (evaluation attacks only
    the clean-correct ones, and AutoAttack only those still robust after each of its attacks): one per iteration,
    plus the final forward. aa-fast (pyautoattack's version 'custom'): apgd-ce's 5 restarts and apgd-t's 9 target
    classes, each of the attack's iterations. aa (version 'standard'): apgd-ce 100 and apgd-t 9 x 100 iterations,
    fab-t 9 x 100 (two passes each, the logits' Jacobian for two classes) and square's 5000 queries (a forward
    each, a third of a pass)."""
    steps = EVAL_ATTACKS.get(name).steps_for(budget)
    if name == "aa-fast":
        return (5 + 9) * steps + 1
    if name == "aa":
        return 100 + 9 * 100 + 2 * 9 * 100 + 5000 // 3 + 1
    return (steps or 1) + 1


def evaluation_seconds(cfg: EvalParams, n: int, pass_s: float) -> float:
    """An upper bound on the seconds `acdistill.evaluate` takes for one model under the `eval` section on `n` images
    (eval.n, or the whole test subset), from the seconds of one pass at its batch size (`pass_seconds`): the clean
    pass, and each attack's passes over the batches of its images (n, or fewer by eval.n_per_attack)."""
    batches = {a: math.ceil(min(cfg.n_per_attack.get(a, n), n) / cfg.batch_size) for a in cfg.attacks}
    attacks = sum(batches[a] * attack_passes(a, cfg.budget()) for a in cfg.attacks if a != "natural")
    return (math.ceil(n / cfg.batch_size) + attacks) * pass_s


def most_epochs(available_s: float, epoch_s: float, aft_epoch_s: float, aft: AftParams | None, cap: int) -> int:
    """The most epochs E <= cap such that E epochs of `epoch_s` seconds, then the adversarial fine-tuning that E
    gives (`aft.for_student(E)`, at `aft_epoch_s` an epoch; none when `aft` is None), take at most `available_s`
    seconds; 0 when not even one epoch fits."""

    def cost(epochs: int) -> float:
        tuned = aft.for_student(epochs, "the students").epochs if aft is not None else 0
        return epochs * epoch_s + tuned * aft_epoch_s

    epochs = 0
    while epochs < cap and cost(epochs + 1) <= available_s:
        epochs += 1
    return epochs
