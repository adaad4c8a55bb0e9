"""Each method's loss on fixed tensors: against a formula written out independently here (the SPEC row, with
the reference code's reduction), and against golden values so that a change of scale cannot slip in."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acdistill.attacks.pgd import kl_objective
from acdistill.config import TrainAttack, load_params
from acdistill.data import Batch, ImageSet
from acdistill.methods import METHODS
from acdistill.losses import float32_math, kl_rows

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


def as_train_set(batch: Batch) -> ImageSet:
    return ImageSet("toy", (batch.x * 255).round().byte(), batch.y, batch.index, C, "test")


def close(expected):
    return pytest.approx(expected, rel=1e-3, abs=1e-7)  # float32 KL of near-equal distributions


def _kl_rows(p_logits, q_logits, tau=1.0):
    """sum_c p log(p/q) per row, with p = softmax(p_logits/tau), q = softmax(q_logits/tau)."""
    p_logits, q_logits = p_logits.double(), q_logits.double()  # float64: tiny KLs at tau = 30 lose digits
    p = torch.softmax(p_logits / tau, 1)
    return (p * (p.log() - torch.log_softmax(q_logits / tau, 1))).sum(1)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    student = Featured(nn.Flatten(), 12, C)
    teacher = Featured(nn.Flatten(), 12, C).requires_grad_(False)
    x = torch.rand(B, 3, 2, 2)
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    batch = Batch(x, torch.tensor([0, 1, 2, 4]), torch.arange(B))
    return student, teacher, batch, x_adv


def _loss(name, setup, **params):
    student, teacher, batch, x_adv = setup
    cls = METHODS.get(name)
    method = cls(student, teacher if cls.needs_teacher else None, cls.Params(**params), TrainAttack())
    method.setup(as_train_set(batch))
    return {k: v.item() for k, v in method.loss(batch, x_adv).items()}


def test_natural(setup):
    s, _, batch, _ = setup
    assert _loss("natural", setup) == close({"ce": F.cross_entropy(s(batch.x), batch.y).item()})


def test_sat(setup):
    s, _, batch, x_adv = setup
    assert _loss("sat", setup) == close({"ce_adv": F.cross_entropy(s(x_adv), batch.y).item()})


def test_trades(setup):
    s, _, batch, x_adv = setup
    expected = {"ce": F.cross_entropy(s(batch.x), batch.y).item(),
                "kl_robust": 6.0 * _kl_rows(s(batch.x), s(x_adv)).mean().item()}
    assert _loss("trades", setup) == close(expected)


def test_kd(setup):
    s, t, batch, _ = setup
    expected = {"kl": 0.9 * 16 * _kl_rows(t(batch.x), s(batch.x), 4.0).mean().item(),
                "ce": 0.1 * F.cross_entropy(s(batch.x), batch.y).item()}
    assert _loss("kd", setup) == close(expected)


def test_ard_averages_kl_over_batch_and_classes(setup):
    s, t, batch, x_adv = setup
    kl = _kl_rows(t(batch.x), s(x_adv), 30.0).sum().item() / (B * C)
    assert _loss("ard", setup) == close({"kl": 900 * kl})
    with_ce = _loss("ard", setup, alpha=0.5)
    assert with_ce == close({"kl": 0.5 * 900 * kl, "ce": 0.5 * F.cross_entropy(s(batch.x), batch.y).item()})


def test_rslad_averages_kl_over_batch_and_classes(setup):
    s, t, batch, x_adv = setup
    expected = {"kl_adv": 5 / 6 * _kl_rows(t(batch.x), s(x_adv)).sum().item() / (B * C),
                "kl_nat": 1 / 6 * _kl_rows(t(batch.x), s(batch.x)).sum().item() / (B * C)}
    assert _loss("rslad", setup) == close(expected)


# Recorded from this implementation after the formula checks above passed.
GOLDEN = {
    "ard": {"kl": 0.018350332975387573},
    "crdnd": {"relation_nat": 0.395256906747818, "relation_adv": 1.5823709964752197},  # tests/test_crdnd_iad.py
    # formulas: tests/test_gacd.py; each anchor's 3 negatives here are its whole pool, each drawn once
    "gacd": {"nce": 0.7341806888580322, "nce_student_anchor": 0.6754052639007568, "ce": 1.6038143634796143},
    "iad": {"kl": 0.08300504833459854},  # before its begin epoch; both phases: tests/test_crdnd_iad.py
    "kd": {"kl": 0.07991190999746323, "ce": 0.16038143634796143},
    "natural": {"ce": 1.6038143634796143},
    "rslad": {"kl_adv": 0.013834175653755665, "kl_nat": 0.002722018864005804},
    "sat": {"ce_adv": 1.6086454391479492},
    "trades": {"ce": 1.6038143634796143, "kl_robust": 0.0006133764982223511},
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_values(setup, name):
    assert _loss(name, setup) == close(GOLDEN[name])


def test_every_method_has_a_golden_value():
    assert sorted(GOLDEN) == METHODS.names()


@pytest.mark.parametrize("name", METHODS.names())
def test_perturb_stays_in_ball_and_teacher_gets_no_gradient(name):
    torch.manual_seed(0)
    student = Featured(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4, C)
    teacher = Featured(nn.Flatten(), 3 * 8 * 8, C).eval().requires_grad_(False)
    batch = Batch(torch.rand(6, 3, 8, 8), torch.randint(0, C, (6,)), torch.arange(6))
    attack = TrainAttack(eps=4 / 255, step_size=2 / 255, steps=3)
    cls = METHODS.get(name)
    method = cls(student, teacher if cls.needs_teacher else None, cls.Params(), attack)
    method.setup(as_train_set(batch))
    x_adv = method.perturb(batch)
    assert student.training, "perturb must hand the student back in train mode"
    if x_adv is not None:
        assert (x_adv - batch.x).abs().max() <= 4 / 255 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
        assert not torch.equal(x_adv, batch.x)
    total = sum(method.loss(batch, x_adv).values())
    total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in method.parameters())


def test_ard_attacks_in_train_mode_rslad_in_eval_mode():
    assert METHODS.get("ard").attack_mode == "train" and METHODS.get("rslad").attack_mode == "eval"


def test_method_needs_teacher():
    with pytest.raises(ValueError, match="needs a teacher"):
        METHODS.get("rslad")(nn.Linear(2, 2), None, METHODS.get("rslad").Params(), TrainAttack())


def test_params_section_reaches_the_method():
    p = load_params(None, {"distill.method": "kd", "distill.kd": {"tau": 2.0, "alpha": 0.5}})
    assert p.distill.method_params().tau == 2.0 and p.distill.method_params().alpha == 0.5


class RoundedLogits(nn.Module):
    """The model's logits rounded to bfloat16, as bf16 autocast produces them, handed on as `dtype`."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        return self.model(x).bfloat16().to(self.dtype)


@pytest.mark.parametrize("name", ["kd", "ard", "rslad", "iad", "trades", "crdnd"])
def test_losses_are_float32_math_on_bfloat16_logits(name, setup):
    """CPU autocast leaves softmax and log_softmax in bfloat16, whose spacing near log(0.1) is 0.016: ARD's KL at
    tau 30 came out negative in the study. The same logits given as bfloat16 or as float32 must give one loss."""
    student, teacher, batch, x_adv = setup
    cls = METHODS.get(name)
    values = []
    for dtype in (torch.bfloat16, torch.float32):
        method = cls(RoundedLogits(student, dtype), RoundedLogits(teacher, dtype), cls.Params(), TrainAttack())
        method.setup(as_train_set(batch))
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
    exact = _kl_rows(reference, logits).sum().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kl_objective(lambda x: x, reference)(logits).item() == pytest.approx(exact, rel=1e-5)


def test_kl_gradient_stays_finite_when_a_target_probability_underflows():
    # TRADES' target S(x) takes gradients; softmax of logits 200 apart gives an exact 0, and kl_div on
    # probabilities then back-propagates 0 * -inf = NaN (it stopped a TRADES run in its first epoch)
    target = torch.tensor([[200.0, 0.0, -5.0]], requires_grad=True)
    logits = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    kl_rows(target, logits).sum().backward()
    assert torch.isfinite(target.grad).all() and torch.isfinite(logits.grad).all()


def train_mode_passes(name: str, epoch: int = 0, **params) -> tuple[list[str], int]:
    """The student's forward passes in train mode during one training step (perturb, then loss), in order, each
    'clean' (on the batch) or 'adv'; and how many times its batch norm updated its running statistics."""
    torch.manual_seed(0)
    student = Featured(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4, C)
    teacher = Featured(nn.Flatten(), 3 * 8 * 8, C).eval().requires_grad_(False)
    batch = Batch(torch.rand(6, 3, 8, 8), torch.randint(0, C, (6,)), torch.arange(6))
    cls = METHODS.get(name)
    method = cls(student, teacher if cls.needs_teacher else None, cls.Params(**params),
                 TrainAttack(eps=4 / 255, step_size=2 / 255, steps=2))
    method.setup(as_train_set(batch))
    method.on_epoch_start(epoch, 10)
    passes = []
    student.register_forward_pre_hook(
        lambda module, args: passes.append("clean" if torch.equal(args[0], batch.x) else "adv")
        if module.training else None)
    sum(method.loss(batch, method.perturb(batch)).values()).backward()
    return passes, student.body[1].num_batches_tracked.item()


ATTACK_STEPS = ["adv", "adv"]  # the 2 steps of the training attack, where the method attacks in train mode


@pytest.mark.parametrize("name, epoch, reference", [
    # ard.py of goldblum/AdversariallyRobustDistillation: attack, S(x') (its last output), S(x) even at alpha = 1
    ("ard", 0, ATTACK_STEPS + ["adv", "clean"]),
    # IAD-I.py of ZFancy/IAD: as ARD before `begin` (epoch 3 of 10), then a second S(x) inside the self-KL
    ("iad", 0, ATTACK_STEPS + ["adv", "clean"]),
    ("iad", 3, ATTACK_STEPS + ["adv", "clean", "clean"]),
    # trades_loss of yaodongyu/TRADES: the attack in eval mode, then S(x), S(x') and S(x) again in the KL
    ("trades", 0, ["clean", "adv", "clean"]),
])
def test_the_student_runs_the_reference_codes_train_mode_passes(name, epoch, reference):
    """Every forward pass of the student in train mode moves its batch-norm running statistics, used or not."""
    assert train_mode_passes(name, epoch) == (reference, len(reference))
    used_only = train_mode_passes(name, epoch, reference_passes=False)[0]
    assert used_only == reference[:-1]  # the last pass of each is the one whose output the step does not need
