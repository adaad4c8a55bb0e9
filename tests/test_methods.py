"""What every registered method must do, checked on each one the registry holds: a method added in one file is
tested here without any edit. Each method's own formulas and golden values are in tests/methods/test_<name>.py."""

from pathlib import Path

import pytest
import torch
from torch import nn
from toy_methods import C, Featured, build, kl_rows64

from acdistill.attacks.pgd import kl_objective
from acdistill.budgets import TrainAttack
from acdistill.config import load_params
from acdistill.data import Batch
from acdistill.losses import float32_math, kl_rows
from acdistill.methods import METHODS
from acdistill.methods.base import ReweightParams


def test_every_method_has_its_own_test_file():
    here = Path(__file__).parent / "methods"
    assert {name for name in METHODS.names() if not (here / f"test_{name}.py").is_file()} == set()


@pytest.mark.parametrize("name", METHODS.names())
def test_perturb_stays_in_ball_and_teacher_gets_no_gradient(name):
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
    method = build(name, student, teacher, TrainAttack(eps=4 / 255, step_size=2 / 255, steps=3), batch)
    x_adv = method.perturb(batch)
    assert student.training, "perturb must hand the student back in train mode"
    if x_adv is not None:
        assert (x_adv - batch.x).abs().max() <= 4 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        assert not torch.equal(x_adv, batch.x)
    total = sum(method.loss(batch, x_adv).values())
    total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in method.parameters())


@pytest.mark.parametrize("name", METHODS.names())
def test_a_method_is_a_module_whose_state_is_its_own(name, toy):
    """Its heads and buffers, not the student's or the teacher's weights: the trainer saves and moves those."""
    student, teacher, batch, _ = toy
    method = build(name, student, teacher, batch=batch)
    assert isinstance(method, nn.Module)
    networks = {id(t) for net in (student, teacher) for t in [*net.parameters(), *net.buffers()]}
    assert not networks & {id(t) for t in [*method.parameters(), *method.buffers()]}
    assert not any(key.startswith(("student.", "teacher.")) for key in method.state_dict())
    rebuilt = build(name, student, teacher, batch=batch)
    rebuilt.load_state_dict(method.state_dict())  # a resumed run restores it into a freshly set up method


@pytest.mark.parametrize("name", [n for n in METHODS.names() if issubclass(METHODS.get(n).Params, ReweightParams)])
def test_reweighting_changes_nothing_when_the_teacher_is_certain(name, toy):
    student, teacher, batch, x_adv = toy
    certain = lambda inputs: 1000 * nn.functional.one_hot(batch.y, C).float()  # noqa: E731  p_T(y | x) = 1

    def losses(net, **params):
        torch.manual_seed(1)
        method = build(name, student, net, batch=batch, **params)
        return {k: v.item() for k, v in method.loss(batch, x_adv).items()}

    assert losses(certain, reweight=True) == pytest.approx(losses(certain), rel=1e-6)
    assert losses(teacher, reweight=True) != pytest.approx(losses(teacher), rel=1e-3)  # ...and it does otherwise


def test_params_section_reaches_the_method():
    p = load_params(None, {"distill.method": "kd", "distill.kd": {"tau": 2.0, "alpha": 0.5}})
    assert p.distill.method_params().tau == 2.0 and p.distill.method_params().alpha == 0.5


class Rounded(nn.Module):
    """The model's features and logits rounded to bfloat16, as bf16 autocast produces them, handed on as `dtype`."""

    def __init__(self, model: Featured, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype, self.feature_dim = model, dtype, model.feature_dim

    def features(self, x):
        return self.model.features(x).bfloat16().to(self.dtype)

    def head(self, f):
        return self.model.head(f.float()).bfloat16().to(self.dtype)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("name", METHODS.names())
def test_losses_are_float32_math_on_bfloat16_outputs(name, toy):
    """CPU autocast leaves softmax and log_softmax in bfloat16, whose spacing near log(0.1) is 0.016: ARD's KL at
    tau 30 came out negative in the study. The same outputs given as bfloat16 or as float32 must give one loss."""
    student, teacher, batch, x_adv = toy
    values = []
    for dtype in (torch.bfloat16, torch.float32):
        torch.manual_seed(0)
        method = build(name, Rounded(student, dtype), Rounded(teacher, dtype), batch=batch)
        method.on_epoch_start(9, 10)  # IAD's introspection term is on from 30 % of the epochs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            values.append({k: v.item() for k, v in method.loss(batch, x_adv).items()})
    assert values[0] == pytest.approx(values[1], rel=1e-5, abs=1e-7)


def test_float32_math_lifts_low_precision_arguments_and_turns_autocast_off():
    @float32_math
    def product(a, b, *, scale):
        return a @ b * scale

    a = torch.randn(4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a.float() @ a.float()).dtype == torch.bfloat16  # what autocast alone makes of float32 inputs
        lifted = product(a, a, scale=torch.tensor(2.0).half())
    assert lifted.dtype == torch.float32
    assert torch.equal(lifted, a.float() @ a.float() * 2)


def test_the_trades_attack_objective_is_float32_math_on_bfloat16_logits():
    torch.manual_seed(0)
    reference, logits = torch.randn(8, C).bfloat16(), torch.randn(8, C).bfloat16()
    exact = kl_rows64(reference, logits).sum().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kl_objective(lambda x: x, reference)(logits).item() == pytest.approx(exact, rel=1e-5)


def test_kl_gradient_stays_finite_when_a_target_probability_underflows():
    # TRADES' target S(x) takes gradients; softmax of logits 200 apart gives an exact 0, and kl_div on
    # probabilities then back-propagates 0 * -inf = NaN (it stopped a TRADES run in its first epoch)
    target = torch.tensor([[200.0, 0.0, -5.0]], requires_grad=True)
    logits = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    kl_rows(target, logits).sum().backward()
    assert torch.isfinite(target.grad).all() and torch.isfinite(logits.grad).all()
