"""A toy student and teacher and one fixed batch, shared by the method tests: each method's loss on them is
checked against a formula written out in its own test file, tests/methods/test_<name>.py (the paper's, with the
reference code's reduction), and against golden values so that a change of scale cannot slip in."""

import pytest
import torch
from torch import nn

from acdistill.budgets import TrainAttack
from acdistill.data import Batch, ImageSet
from acdistill.methods import METHODS

B, C = 4, 5


class Featured(nn.Module):
    """head(features(x)), the model interface feature-based methods (gacd) need; with body = Flatten it computes
    exactly what nn.Sequential(Flatten, Linear) does, with the same initialization."""

    def __init__(self, body: nn.Module, feature_dim: int, classes: int):
        super().__init__()
        self.body, self.feature_dim, self.linear = body, feature_dim, nn.Linear(feature_dim, classes)

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.linear(f)

    def forward(self, x):
        return self.head(self.features(x))


def as_train_set(batch: Batch, classes: int = C) -> ImageSet:
    return ImageSet("toy", (batch.x * 255).round().byte(), batch.y, batch.index, classes, "test")


def close(expected):
    return pytest.approx(expected, rel=1e-3, abs=1e-7)  # float32 KL of near-equal distributions


def kl_rows64(p_logits, q_logits, tau=1.0):
    """sum_c p log(p/q) per row, with p = softmax(p_logits/tau), q = softmax(q_logits/tau), in float64 (tiny KLs at
    tau = 30 lose digits in float32)."""
    p_logits, q_logits = p_logits.double(), q_logits.double()
    p = torch.softmax(p_logits / tau, 1)
    return (p * (p.log() - torch.log_softmax(q_logits / tau, 1))).sum(1)


@pytest.fixture
def toy():
    """(student, teacher, batch, x_adv): linear networks on 3 x 2 x 2 inputs, 5 classes, a batch of 4."""
    torch.manual_seed(0)
    student = Featured(nn.Flatten(), 12, C)
    teacher = Featured(nn.Flatten(), 12, C).requires_grad_(False)
    x = torch.rand(B, 3, 2, 2)
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    batch = Batch(x, torch.tensor([0, 1, 2, 4]), torch.arange(B))
    return student, teacher, batch, x_adv


def build(name, student, teacher, attack=TrainAttack(), batch=None, **params):
    """The registered method `name` on these networks, set up on `batch` as its training set."""
    cls = METHODS.get(name)
    method = cls(student, teacher if cls.needs_teacher else None, cls.Params(**params), attack)
    if batch is not None:
        method.setup(as_train_set(batch))
    return method


def loss_values(name, toy, **params):
    """The method's loss terms on the toy batch, as floats."""
    student, teacher, batch, x_adv = toy
    return {k: v.item() for k, v in build(name, student, teacher, batch=batch, **params).loss(batch, x_adv).items()}


def train_mode_passes(name: str, epoch: int = 0, **params) -> tuple[list[str], int]:
    """The student's forward passes in train mode during one training step (perturb, then loss), in order, each
    'clean' (on the batch) or 'adv'; and how many times its batch norm updated its running statistics."""
    torch.manual_seed(0)
    student = Featured(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        ),
        4,
        C,
    )
    teacher = Featured(nn.Flatten(), 3 * 8 * 8, C).eval().requires_grad_(False)
    batch = Batch(torch.rand(6, 3, 8, 8), torch.randint(0, C, (6,)), torch.arange(6))
    method = build(name, student, teacher, TrainAttack(eps=4 / 255, step_size=2 / 255, steps=2), batch, **params)
    method.on_epoch_start(epoch, 10)
    passes = []
    student.register_forward_pre_hook(
        lambda module, args: (
            passes.append("clean" if torch.equal(args[0], batch.x) else "adv") if module.training else None
        )
    )
    sum(method.loss(batch, method.perturb(batch)).values()).backward()
    return passes, student.body[1].num_batches_tracked.item()


# the 2 steps of train_mode_passes' training attack, for methods that attack in train mode
ATTACK_STEPS = ["adv", "adv"]


def check_reference_passes(name: str, epoch: int, reference: list[str]) -> None:
    """Every forward pass of the student in train mode moves its batch-norm running statistics, used or not: the
    method runs the reference code's passes by default, and without the unused last one with
    `reference_passes: false`."""
    assert train_mode_passes(name, epoch) == (reference, len(reference))
    assert train_mode_passes(name, epoch, reference_passes=False)[0] == reference[:-1]
