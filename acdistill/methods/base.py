"""The Method interface: every training recipe is a `perturb` (inner maximization) and a `loss` (outer
minimization) returning named, already-weighted terms; the trainer only sums them.

Adding a method means adding one file to this package that defines a `Method` subclass decorated with
`@register_method`; the package imports every module in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from acdistill.attacks.pgd import Objective, Start, pgd
from acdistill.budgets import Budget, TrainAttack
from acdistill.data import Batch, ImageSet
from acdistill.distributed import Ranks
from acdistill.losses import float32_math
from acdistill.registry import Registry


class MethodParams(BaseModel):
    """Base of each method's own params section (``distill.<method>`` in params.yaml); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@float32_math
def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[y] per sample: the teacher-confidence weight of GACD, IAD and the `reweight` option."""
    return F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


class ReweightParams(MethodParams):
    """Params of a teacher-based method that supports teacher-confidence reweighting."""

    reweight: bool = Field(False, description="multiply each sample's distillation term by p_T(y | x), detached")


GraphSupport = Literal["none", "forward", "whole_step"]


class Method(nn.Module):
    """A training recipe: `perturb` (the inner maximization) and `loss` (the outer minimization). The trainer calls
    `perturb`, then `loss`, sums the returned terms, backpropagates, and steps one optimizer over the student's
    parameters and the method's own.

    The student and the teacher are the trainer's networks, held as plain attributes, not submodules: the trainer
    moves, saves and optimizes the student, and the teacher stays frozen. What a method adds is its own module
    state: projection heads are submodules (their parameters train with the student's), memory banks and running
    statistics are buffers, and non-tensor state goes through `get_extra_state` / `set_extra_state`. The trainer
    moves the method to its device after `setup` and saves its `state_dict()` in the resumable state.

    A subclass sets `name` (and registers with `@register_method`), may set `Params` (its own params section,
    `distill.<name>`), `needs_teacher`, `attack_mode`, `log_only_prefixes` and `cuda_graphs`, and implements `loss`
    and, for adversarial methods, `perturb`.
    """

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    needs_teacher: ClassVar[bool] = False
    # Mode of the student while the training attack runs (the reference codes differ; each method states its own).
    attack_mode: ClassVar[Literal["train", "eval"]] = "eval"
    # Per-epoch values under these prefixes go to dvclive only, not to the console line (e.g. per-class series).
    log_only_prefixes: ClassVar[tuple[str, ...]] = ()
    # How much of a training step may run as a CUDA graph. "forward": the networks' forward passes, as
    # torch.compile's mode reduce-overhead records them. "whole_step": the whole step captured once and replayed
    # (speed.step_graph, engine/step_graph.py), which needs a step that syncs with no host and keeps no state outside
    # tensors updated in place; it implies "forward". "none": neither (GACD, which also runs features() outside the
    # compiled forward and rebinds its bank every step, failed under them on an H100).
    cuda_graphs: ClassVar[GraphSupport] = "none"
    # The torchrun processes training together (set by the trainer): a method whose loss or state spans the whole
    # batch gathers across them; per-sample losses need nothing, as DDP averages the gradients.
    ranks: Ranks = Ranks()

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: MethodParams, attack: TrainAttack):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method '{self.name}' needs a teacher")
        # Plain attributes (nn.Module's __setattr__ would make them submodules, and their weights part of this
        # method's state_dict and parameters).
        self.__dict__.update(student=student, teacher=teacher)
        self.params = params
        self.attack: Budget = self.training_attack(params, attack).budget()
        self._teacher_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def training_attack(cls, params: MethodParams, attack: TrainAttack) -> TrainAttack:
        """The attack `perturb` runs, from the section's `attack` and the method's params: the section's, unless the
        method sets its own steps (GACD's feature scattering). Cost estimates read it too."""
        return attack

    def setup(self, train_set: ImageSet) -> None:
        """Called once before training (and before a saved state is restored), for state sized by the training
        set, such as a memory bank."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based), also when a run resumes, for schedules that depend on the epoch."""

    def on_epoch_end(self) -> dict[str, float]:
        """Called after each epoch; returns extra per-epoch values to log (e.g. a method's running statistics)."""
        return {}

    def perturb(self, batch: Batch) -> torch.Tensor | None:
        """The adversarial batch x' for this step: float [B, 3, H, W] in [0, 1], within the section's budget
        (`run_attack` keeps it there), or None for methods trained on clean inputs only.

        batch.x: float [B, 3, H, W] in [0, 1]; batch.y: int64 [B] labels; batch.index: int64 [B] dataset indices."""
        return None

    def loss(self, batch: Batch, x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The step's loss as named scalar terms, each already weighted: the trainer minimizes their sum and logs
        each term's mean per epoch (`loss/<name>`). x_adv is `perturb`'s output for the same batch."""
        raise NotImplementedError

    def run_attack(self, make_objective: Callable[[], Objective], x: torch.Tensor, start: Start) -> torch.Tensor:
        """The inner maximization within this method's budget, with the student in `attack_mode` (also while
        the objective is built, e.g. TRADES' clean logits) and back in train mode after."""
        a = self.attack
        self.student.train(self.attack_mode == "train")
        try:
            return pgd(make_objective(), x, eps=a.eps, step_size=a.step_size, steps=a.steps, start=start, norm=a.norm)
        finally:
            self.student.train(True)

    @torch.no_grad()
    def sample_weight(self, batch: Batch) -> torch.Tensor | None:
        """With `reweight: true`, p_T(y | x) per sample (the GACD paper's ablation applies it to ARD); else None."""
        if not getattr(self.params, "reweight", False):
            return None
        return true_class_probability(self.teacher_logits(batch.x), batch.y)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """T(x), computed once per input tensor: perturb and loss of the same step share it."""
        assert self.teacher is not None
        if self._teacher_cache is None or self._teacher_cache[0] is not x:
            # A copy: under torch.compile's CUDA graphs (mode reduce-overhead) the student's runs reuse the memory
            # of the teacher's output before this step's loss reads it.
            self._teacher_cache = (x, self.teacher(x).clone())
        return self._teacher_cache[1]


METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    return METHODS.register(cls.name)(cls)
