import math

import pytest
import torch
import torch.nn.functional as F

from acdistill.attacks import EVAL_ATTACKS, Budget, ce_objective, cw_l2, cw_objective, fgsm, pgd
from acdistill.engine.evaluate import correct_mask

EPS = 0.02  # the naturally trained MNIST model keeps ~50 % under PGD-20 here: far from both 0 and 100 %


@pytest.mark.parametrize("start", ["uniform", "normal", "none"])
def test_pgd_stays_in_ball_and_box_and_raises_loss(mnist_model, mnist_test, start):
    x, y = mnist_test.images[:200].float() / 255, mnist_test.labels[:200]
    torch.manual_seed(0)
    x_adv = pgd(ce_objective(mnist_model, y), x, eps=EPS, step_size=0.005, steps=10, start=start)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(mnist_model(x_adv), y) > F.cross_entropy(mnist_model(x), y) + 0.2


def test_pgd_leaves_parameter_gradients_alone(mnist_model, mnist_test):
    x, y = mnist_test.images[:8].float() / 255, mnist_test.labels[:8]
    mnist_model.zero_grad(set_to_none=True)
    pgd(ce_objective(mnist_model, y), x, eps=EPS, step_size=0.02, steps=2)
    assert all(p.grad is None for p in mnist_model.parameters())


def test_fgsm_is_one_full_step(mnist_model, mnist_test):
    x, y = mnist_test.images[:64].float() / 255, mnist_test.labels[:64]
    delta = fgsm(mnist_model, x, y, EPS) - x
    interior = (x > EPS) & (x < 1 - EPS)
    assert torch.allclose(delta[interior].abs(), torch.full_like(delta[interior], EPS), atol=1e-6)


def test_cw_objective_matches_reference_cwloss():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 30
    y = torch.randint(0, 10, (6,))
    onehot = F.one_hot(y, 10).float()
    real = (onehot * logits).sum(1)
    other = ((1 - onehot) * logits - onehot * 10000).max(1)[0]
    reference = -torch.clamp(real - other + 50, min=0).sum()  # TRADES/RSLAD cwloss
    assert torch.allclose(cw_objective(lambda x: x, y)(logits), reference)


def _torchattacks_accuracy(model, data, random_start):
    import torchattacks

    atk = torchattacks.PGD(model, eps=EPS, alpha=0.005, steps=20, random_start=random_start)
    x, y = data.images.float() / 255, data.labels
    torch.manual_seed(1)
    return (model(atk(x, y)).argmax(1) == y).float().mean().item() * 100


def _our_accuracy(model, data, start):
    def attack(m, x, y, b):
        return pgd(ce_objective(m, y), x, eps=b.eps, step_size=0.005, steps=20, start=start)

    torch.manual_seed(1)
    correct = correct_mask(model, data, attack, budget=Budget(EPS), batch_size=500, device="cpu")
    return correct.float().mean().item() * 100


def test_pgd_agrees_with_torchattacks(mnist_model, mnist_test):
    data = mnist_test.take(500)
    ours = _our_accuracy(mnist_model, data, "uniform")
    theirs = _torchattacks_accuracy(mnist_model, data, True)
    assert 5 < theirs < 95, "the model should be neither broken nor robust at this eps"
    assert abs(ours - theirs) <= 1.5
    # Without the random start both are deterministic and must agree almost exactly.
    assert abs(_our_accuracy(mnist_model, data, "none") - _torchattacks_accuracy(mnist_model, data, False)) <= 0.3


def test_eval_attack_suite_ordering(mnist_model, mnist_test):
    data = mnist_test.take(300)
    acc = {
        name: correct_mask(
            mnist_model, data, EVAL_ATTACKS.get(name).run, budget=Budget(EPS), batch_size=300, device="cpu"
        )
        .float()
        .mean()
        .item()
        for name in ["natural", "fgsm", "pgd7", "pgd20"]
    }
    assert acc["natural"] > acc["fgsm"] >= acc["pgd7"] - 0.02 and acc["pgd7"] >= acc["pgd20"] - 0.02


def _cw_robust(model, x, y, x_adv):
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    return ~(wrong & ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6))


def test_cw2_agrees_with_torchattacks(mnist_model, mnist_test):
    import torchattacks

    x, y = mnist_test.images[:64].float() / 255, mnist_test.labels[:64]
    with torch.no_grad():
        keep = mnist_model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    ours = cw_l2(mnist_model, x, y)
    assert ((ours - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    theirs = torchattacks.CW(mnist_model, c=1, kappa=0, steps=100, lr=0.01)(x, y)
    ours_acc = _cw_robust(mnist_model, x, y, ours).float().mean().item()
    theirs_acc = _cw_robust(mnist_model, x, y, theirs).float().mean().item()
    assert 0.05 < ours_acc < 0.95, "the example set should be neither all broken nor all robust"
    assert ours_acc <= theirs_acc + 0.02  # without torchattacks' early stop ours is at least as strong
    assert abs(ours_acc - theirs_acc) <= 0.1


def test_l2_pgd_stays_in_the_l2_ball_and_agrees_with_torchattacks(mnist_model, mnist_test):
    import torchattacks

    data = mnist_test.take(300)
    x, y = data.images.float() / 255, data.labels
    eps = 1.0
    torch.manual_seed(0)
    ours = EVAL_ATTACKS.get("pgd20").run(mnist_model, x, y, Budget(eps, "L2"))
    assert ((ours - x).flatten(1).norm(dim=1) <= eps + 1e-4).all() and ours.min() >= 0 and ours.max() <= 1
    theirs = torchattacks.PGDL2(mnist_model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        acc_ours, acc_theirs = ((mnist_model(a).argmax(1) == y).float().mean().item() * 100 for a in (ours, theirs))
    assert 5 < acc_theirs < 95
    assert abs(acc_ours - acc_theirs) <= 3.0  # random starts differ (ours: uniform radius), the same attack otherwise


def test_steps_override_reaches_iterative_attacks_only(mnist_model, mnist_test):
    x, y = mnist_test.images[:100].float() / 255, mnist_test.labels[:100]
    assert EVAL_ATTACKS.get("pgd20").steps_for(Budget(EPS, steps=3)) == 3
    assert EVAL_ATTACKS.get("fgsm").steps_for(Budget(EPS, steps=3)) is None
    torch.manual_seed(0)
    one_step = EVAL_ATTACKS.get("pgd20").run(mnist_model, x, y, Budget(EPS, steps=1))
    torch.manual_seed(0)
    start = x + torch.empty_like(x).uniform_(-EPS, EPS)
    one_by_hand = torch.clamp(torch.minimum(torch.maximum(start, x - EPS), x + EPS), 0, 1)
    one_by_hand = pgd(ce_objective(mnist_model, y), one_by_hand, eps=EPS, step_size=2 / 255, steps=1, start="none")
    assert torch.allclose(torch.clamp(torch.minimum(torch.maximum(one_by_hand, x - EPS), x + EPS), 0, 1), one_step)


def test_budget_and_norm_errors():
    from acdistill.errors import AcdistillError

    with pytest.raises(AcdistillError, match="unknown norm 'L3'"):
        Budget(0.1, "L3")
    with pytest.raises(AcdistillError, match=r"eps must be in \[0, 1\] for L-inf"):
        Budget(2.0)
    assert Budget(2.0, "L2").eps == 2.0
    with pytest.raises(AcdistillError, match="'cw-inf' is defined for Linf only, not L2"):
        EVAL_ATTACKS.get("cw-inf").check(Budget(0.5, "L2"))


def apgd_checkpoints(n_iter: int) -> list[int]:
    """The iterations after which APGD checks its progress and may halve its step, as pyautoattack's
    autopgd_base.py computes them: the first after max(floor(0.22 N), 1) iterations, each later interval shorter by
    max(floor(0.03 N), 1) but at least max(floor(0.06 N), 1)."""
    gap, shrink, least = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out = []
    while (out[-1] if out else 0) + gap <= n_iter:
        out.append((out[-1] if out else 0) + gap)
        gap = max(gap - shrink, least)
    return out


def paper_checkpoints(n_iter: int) -> list[int]:
    """Croce & Hein 2020, sec. 3.2: w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
    0.03, 0.06), while p_j <= 1 (exact fractions, so that 0.41 N is not read as 41.000000000000007)."""
    from fractions import Fraction

    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return [math.ceil(q * n_iter) for q in p[1:]]


def test_apgd_checkpoints_as_transcribed_are_the_papers_at_100_iterations():
    assert apgd_checkpoints(100) == paper_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # the integer rule; the paper's ceil gives 3, 5, ...


@pytest.mark.parametrize("steps", [10, 100])
def test_aa_fast_runs_apgd_with_the_schedule_of_its_iterations_and_5_restarts(
    mnist_model, mnist_test, steps, monkeypatch
):
    """With --steps, APGD's step-size checkpoints are those of the requested iterations, for APGD-CE and APGD-T
    alike; APGD-CE runs the 5 restarts `acdistill attacks` states. A budget far too small to fool anything keeps
    every image in play for every restart."""
    from pyautoattack.autopgd_base import APGDAttack

    checks: dict[str, set[int]] = {"ce": set(), "dlr-targeted": set()}
    restarts = []
    original_check, original_run = APGDAttack.check_oscillation, APGDAttack.attack_single_run

    def check_oscillation(self, x, j, k, *args, **kwargs):
        checks[self.loss].add(j + 1)  # j is the 0-based iteration that just ended
        return original_check(self, x, j, k, *args, **kwargs)

    def attack_single_run(self, *args, **kwargs):
        restarts.append(self.loss)
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(APGDAttack, "check_oscillation", check_oscillation)
    monkeypatch.setattr(APGDAttack, "attack_single_run", attack_single_run)
    x, y = mnist_test.images[:4].float() / 255, mnist_test.labels[:4]
    assert (mnist_model(x).argmax(1) == y).all()
    EVAL_ATTACKS.get("aa-fast").run(mnist_model, x, y, Budget(1e-4, steps=steps))
    assert sorted(checks["ce"]) == sorted(checks["dlr-targeted"]) == apgd_checkpoints(steps)
    assert restarts.count("ce") == 5 and "5 restarts" in EVAL_ATTACKS.get("aa-fast").description
