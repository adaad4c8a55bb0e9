import torch.nn.functional as F
from toy_methods import check_reference_passes, close, kl_rows64, loss_values


def test_loss_is_ce_plus_beta_kl(toy):
    s, _, batch, x_adv = toy
    expected = {
        "ce": F.cross_entropy(s(batch.x), batch.y).item(),
        "kl_robust": 6.0 * kl_rows64(s(batch.x), s(x_adv)).mean().item(),
    }
    assert loss_values("trades", toy) == close(expected)


def test_golden_value(toy):
    assert loss_values("trades", toy) == close({"ce": 1.6038143634796143, "kl_robust": 0.0006133764982223511})


def test_runs_the_reference_codes_train_mode_passes():
    """trades_loss of yaodongyu/TRADES: the attack in eval mode, then S(x), S(x') and S(x) again in the KL."""
    check_reference_passes("trades", 0, ["clean", "adv", "clean"])
