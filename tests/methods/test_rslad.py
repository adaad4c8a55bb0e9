import pytest
from torch import nn
from toy_methods import B, C, close, kl_rows64, loss_values

from acdistill.budgets import TrainAttack
from acdistill.methods import METHODS


def test_kl_is_averaged_over_batch_and_classes(toy):
    s, t, batch, x_adv = toy
    expected = {
        "kl_adv": 5 / 6 * kl_rows64(t(batch.x), s(x_adv)).sum().item() / (B * C),
        "kl_nat": 1 / 6 * kl_rows64(t(batch.x), s(batch.x)).sum().item() / (B * C),
    }
    assert loss_values("rslad", toy) == close(expected)


def test_golden_value(toy):
    assert loss_values("rslad", toy) == close({"kl_adv": 0.013834175653755665, "kl_nat": 0.002722018864005804})


def test_attacks_in_eval_mode():
    assert METHODS.get("rslad").attack_mode == "eval"


def test_needs_a_teacher():
    with pytest.raises(ValueError, match="needs a teacher"):
        METHODS.get("rslad")(nn.Linear(2, 2), None, METHODS.get("rslad").Params(), TrainAttack())
