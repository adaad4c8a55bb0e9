import torch.nn.functional as F
from toy_methods import ATTACK_STEPS, B, C, check_reference_passes, close, kl_rows64, loss_values

from acdistill.methods import METHODS


def test_kl_is_averaged_over_batch_and_classes(toy):
    s, t, batch, x_adv = toy
    kl = kl_rows64(t(batch.x), s(x_adv), 30.0).sum().item() / (B * C)
    assert loss_values("ard", toy) == close({"kl": 900 * kl})
    with_ce = loss_values("ard", toy, alpha=0.5)
    assert with_ce == close({"kl": 0.5 * 900 * kl, "ce": 0.5 * F.cross_entropy(s(batch.x), batch.y).item()})


def test_golden_value(toy):
    assert loss_values("ard", toy) == close({"kl": 0.018350332975387573})


def test_attacks_in_train_mode():
    assert METHODS.get("ard").attack_mode == "train"


def test_runs_the_reference_codes_train_mode_passes():
    """ard.py of goldblum/AdversariallyRobustDistillation: attack, S(x') (its last output), S(x) even at alpha = 1."""
    check_reference_passes("ard", 0, ATTACK_STEPS + ["adv", "clean"])
