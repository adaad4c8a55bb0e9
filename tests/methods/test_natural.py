import torch.nn.functional as F
from toy_methods import close, loss_values


def test_loss_is_ce_on_clean_inputs(toy):
    s, _, batch, _ = toy
    assert loss_values("natural", toy) == close({"ce": F.cross_entropy(s(batch.x), batch.y).item()})


def test_golden_value(toy):
    assert loss_values("natural", toy) == close({"ce": 1.6038143634796143})
