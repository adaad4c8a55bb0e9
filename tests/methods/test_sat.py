import torch.nn.functional as F
from toy_methods import close, loss_values


def test_loss_is_ce_on_adversarial_inputs(toy):
    s, _, batch, x_adv = toy
    assert loss_values("sat", toy) == close({"ce_adv": F.cross_entropy(s(x_adv), batch.y).item()})


def test_golden_value(toy):
    assert loss_values("sat", toy) == close({"ce_adv": 1.6086454391479492})
