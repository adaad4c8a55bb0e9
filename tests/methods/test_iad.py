"""IAD-I (Zhu et al. 2022, ZFancy/IAD): introspective weighting from its begin epoch."""

import pytest
import torch.nn.functional as F
from toy_methods import ATTACK_STEPS, build, check_reference_passes, close, loss_values


def test_golden_value(toy):  # before its begin epoch; both phases below
    assert loss_values("iad", toy) == close({"kl": 0.08300504833459854})


def test_introspects_from_its_begin_epoch(toy):
    student, teacher, batch, x_adv = toy
    method = build("iad", student, teacher, batch=batch)
    s, t = method.student, method.teacher
    kl = lambda p, q: F.kl_div(F.log_softmax(q, 1), F.softmax(p, 1), reduction="none").sum(1)  # noqa: E731
    method.on_epoch_start(2, 10)  # begin 0.3 of 10 epochs = epoch 3
    values = {k: v.item() for k, v in method.loss(batch, x_adv).items()}
    assert values == pytest.approx({"kl": kl(t(batch.x), s(x_adv)).mean().item()}, rel=1e-6)
    method.on_epoch_start(3, 10)
    trust = F.softmax(t(x_adv), 1).gather(1, batch.y[:, None]).squeeze(1) ** 0.1
    expected = {
        "kl": kl(t(batch.x), s(x_adv)).mean().item(),
        "kl_self": ((1 - trust) * kl(s(batch.x), s(x_adv))).mean().item(),
    }
    # kl_self is ~1e-5 here (S(x) and S(x') nearly agree), where float32 cancellation differs by ~6e-9 between
    # kl_div on probabilities and on log-probabilities
    values = {k: v.item() for k, v in method.loss(batch, x_adv).items()}
    assert values == pytest.approx(expected, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(
    "epoch, reference", [(0, ATTACK_STEPS + ["adv", "clean"]), (3, ATTACK_STEPS + ["adv", "clean", "clean"])]
)
def test_runs_the_reference_codes_train_mode_passes(epoch, reference):
    """IAD-I.py of ZFancy/IAD: as ARD before `begin` (epoch 3 of 10), then a second S(x) inside the self-KL."""
    check_reference_passes("iad", epoch, reference)
