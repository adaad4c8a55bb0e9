"""The gradient-masking checks pass on a normally trained model and fail on deliberately masked ones."""

import pytest
import torch
from torch import nn

from acdistill.attacks import Budget
from acdistill.engine.sanity import sanity_checks

CHECKS = {"more_steps", "larger_eps", "whitebox_vs_square", "huge_eps"}


class _QuantizeReversed(torch.autograd.Function):
    """Forward: 4-bit input quantization. Backward: the gradient negated, a caricature of obfuscated gradients
    where following the gradient leads away from adversarial examples."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 15) / 15

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Quantized(nn.Module):
    """`model` on 4-bit quantized inputs: with plain rounding the input gradient is zero everywhere."""

    def __init__(self, model: nn.Module, reverse_gradient: bool):
        super().__init__()
        self.model, self.reverse_gradient = model, reverse_gradient

    def forward(self, x):
        return self.model(_QuantizeReversed.apply(x) if self.reverse_gradient else torch.round(x * 15) / 15)


def _verdicts(model, data):
    checks = sanity_checks(model, data, Budget(0.05), steps=10, square_queries=300, batch_size=200)
    assert {c.name for c in checks} == CHECKS
    return {c.name: c.passed for c in checks}


@pytest.fixture(scope="module")
def sanity_data(mnist_test):
    return mnist_test.take(120)


def test_every_check_passes_on_a_normally_trained_model(mnist_model, sanity_data):
    assert _verdicts(mnist_model, sanity_data) == dict.fromkeys(CHECKS, True)


def test_every_check_fails_on_a_model_with_misleading_gradients(mnist_model, sanity_data):
    assert _verdicts(Quantized(mnist_model, reverse_gradient=True).eval(), sanity_data) == dict.fromkeys(CHECKS, False)


def test_zero_gradients_are_caught_by_square_and_huge_eps(mnist_model, sanity_data):
    """With a zero gradient PGD never moves, so accuracy cannot rise with steps or eps; the black-box and the
    huge-eps checks are the ones that see it (as in AutoAttack's own flags)."""
    verdicts = _verdicts(Quantized(mnist_model, reverse_gradient=False).eval(), sanity_data)
    assert not verdicts["whitebox_vs_square"] and not verdicts["huge_eps"]


def test_sanity_needs_a_positive_eps(mnist_model, sanity_data):
    from acdistill.errors import AcdistillError

    with pytest.raises(AcdistillError, match="eps > 0"):
        sanity_checks(mnist_model, sanity_data, Budget(0.0))
