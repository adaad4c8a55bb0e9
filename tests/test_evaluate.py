import pytest
import torch

from acdistill import evaluate
from acdistill.attacks import EVAL_ATTACKS, EvalAttack

EPS = 0.02  # see test_attacks: the MNIST model keeps about half its accuracy here


def test_attacks_run_only_on_examples_classified_correctly(mnist_model, mnist_test, monkeypatch):
    seen = []

    def recording_pgd(model, x, y, eps):
        seen.append(len(x))
        return EVAL_ATTACKS.get("pgd20").run(model, x, y, eps)

    monkeypatch.setitem(EVAL_ATTACKS._items, "recorded", EvalAttack("recorded", recording_pgd, "test"))
    data = mnist_test.take(200)
    results = evaluate(mnist_model, data, ["natural", "recorded"], eps=EPS, batch_size=64)
    assert sum(seen) == round(results["natural"]["accuracy"] * 2) < 200
    assert results["recorded"]["accuracy"] <= results["natural"]["accuracy"]
    assert results["all_attacks"]["accuracy"] == results["recorded"]["accuracy"]


def test_aa_fast_equals_pyautoattack_by_hand(mnist_model, mnist_test):
    from pyautoattack import AutoAttack

    data = mnist_test.take(48)
    ours = evaluate(mnist_model, data, ["aa-fast"], eps=EPS, batch_size=48)["aa-fast"]["accuracy"]
    x, y = data.images.float() / 255, data.labels
    adversary = AutoAttack(mnist_model, attacks=["apgd-ce", "apgd-t"], eps=EPS, version="custom", seed=0)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=48)
    with torch.no_grad():
        by_hand = mnist_model(x_adv).argmax(1) == y
    assert ours == pytest.approx(100 * by_hand.float().mean().item(), abs=1e-6)
    pgd20 = evaluate(mnist_model, data, ["pgd20"], eps=EPS, batch_size=48)["pgd20"]["accuracy"]
    assert 0 < ours <= pgd20 + 100 / 48  # AutoAttack is at least as strong as PGD-20, up to one example
