"""The Method interface: every training recipe is a `perturb` (inner maximization) and a `loss` (outer
minimization) returning named, already-weighted terms; the trainer only sums them.

Adding a method means adding one file to this package that defines a `Method` subclass decorated with
`@register_method`; the package imports every module in it.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from acdistill.attacks.pgd import Objective, Start, pgd
from acdistill.config import TrainAttack
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


class Method:
    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    needs_teacher: ClassVar[bool] = False
    # Mode of the student while the training attack runs (the reference codes differ; each method states its own).
    attack_mode: ClassVar[Literal["train", "eval"]] = "eval"
    # Per-epoch values under these prefixes go to dvclive only, not to the console line (e.g. per-class series).
    log_only_prefixes: ClassVar[tuple[str, ...]] = ()
    # Whether the networks run only through their forward, as torch.compile's CUDA graphs (compile: reduce-overhead)
    # expect. GACD, which also calls features(), failed under them on an H100 (a tensor saved for backward was
    # modified in place), and is refused.
    cuda_graphs: ClassVar[bool] = True
    # Whether the whole step may be captured as one CUDA graph (cuda_graph: true, engine/step_graph.py): the step
    # syncs with no host and keeps no per-step state outside tensors updated in place. Off unless a method says so.
    step_graph: ClassVar[bool] = False
    # The torchrun processes training together (set by the trainer): a method whose loss or state spans the whole
    # batch gathers across them; per-sample losses need nothing, as the trainer averages the gradients.
    ranks: Ranks = Ranks()

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: MethodParams, attack: TrainAttack):
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method '{self.name}' needs a teacher")
        self.student = student
        self.teacher = teacher
        self.params = params
        self.attack = attack
        self._teacher_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, train_set: ImageSet) -> None:
        """Called once before training (and before a saved state is restored), for state sized by the training
        set, such as a memory bank."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based), also when a run resumes, for schedules that depend on the epoch."""

    def on_epoch_end(self) -> dict[str, float]:
        """Called after each epoch; returns extra per-epoch values to log (e.g. a method's running statistics)."""
        return {}

    def perturb(self, batch: Batch) -> torch.Tensor | None:
        """The adversarial batch x' for this step, or None for methods trained on clean inputs only."""
        return None

    def loss(self, batch: Batch, x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters besides the student's (e.g. projection heads)."""
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Training state besides the student (heads, memory banks), saved with resumable checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"method '{self.name}' keeps no state, got keys {sorted(state)}")

    def run_attack(self, make_objective: Callable[[], Objective], x: torch.Tensor, start: Start) -> torch.Tensor:
        """The inner maximization within this method's budget, with the student in `attack_mode` (also while
        the objective is built, e.g. TRADES' clean logits) and back in train mode after."""
        a = self.attack
        self.student.train(self.attack_mode == "train")
        try:
            return pgd(make_objective(), x, eps=a.eps, step_size=a.step_size, steps=a.steps, start=start)
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
