import torch.nn.functional as F
from toy_methods import close, kl_rows64, loss_values


def test_loss_is_hinton_kd(toy):
    s, t, batch, _ = toy
    expected = {
        "kl": 0.9 * 16 * kl_rows64(t(batch.x), s(batch.x), 4.0).mean().item(),
        "ce": 0.1 * F.cross_entropy(s(batch.x), batch.y).item(),
    }
    assert loss_values("kd", toy) == close(expected)


def test_golden_value(toy):
    assert loss_values("kd", toy) == close({"kl": 0.07991190999746323, "ce": 0.16038143634796143})
