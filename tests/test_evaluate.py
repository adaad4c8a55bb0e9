import pytest
import torch

from acdistill import evaluate
from acdistill.attacks import EVAL_ATTACKS, Budget, EvalAttack

EPS = 0.02  # see test_attacks: the MNIST model keeps about half its accuracy here


def test_attacks_run_only_on_examples_classified_correctly(mnist_model, mnist_test, monkeypatch):
    seen = []

    def recording_pgd(model, x, y, budget):
        seen.append(len(x))
        return EVAL_ATTACKS.get("pgd20").run(model, x, y, budget)

    monkeypatch.setitem(EVAL_ATTACKS._items, "recorded", EvalAttack("recorded", recording_pgd, "test"))
    data = mnist_test.take(200)
    results = evaluate(mnist_model, data, ["natural", "recorded"], budget=Budget(EPS), batch_size=64)
    assert sum(seen) == round(results["natural"]["accuracy"] * 2) < 200
    assert results["recorded"]["accuracy"] <= results["natural"]["accuracy"]
    assert results["all_attacks"]["accuracy"] == results["recorded"]["accuracy"]


def test_aa_fast_equals_pyautoattack_by_hand(mnist_model, mnist_test):
    from pyautoattack import AutoAttack

    data = mnist_test.take(48)
    ours = evaluate(mnist_model, data, ["aa-fast"], budget=Budget(EPS), batch_size=48)["aa-fast"]["accuracy"]
    x, y = data.images.float() / 255, data.labels
    adversary = AutoAttack(mnist_model, attacks=["apgd-ce", "apgd-t"], eps=EPS, version="custom", seed=0)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=48)
    with torch.no_grad():
        by_hand = mnist_model(x_adv).argmax(1) == y
    assert ours == round(100 * by_hand.float().mean().item(), 2)  # evaluate reports accuracies to 2 decimals
    pgd20 = evaluate(mnist_model, data, ["pgd20"], budget=Budget(EPS), batch_size=48)["pgd20"]["accuracy"]
    assert 0 < ours <= pgd20 + 100 / 48  # AutoAttack is at least as strong as PGD-20, up to one example


def test_eps_sweep_matches_evaluate_and_falls_with_eps(mnist_model, mnist_test):
    from acdistill.engine.evaluate import eps_sweep

    data = mnist_test.take(100)
    rows = eps_sweep(mnist_model, data, "pgd20", [0.0, 0.01, EPS, 0.04], batch_size=100)
    assert [r["eps"] for r in rows] == [0.0, 0.01, EPS, 0.04]
    accuracy = [r["accuracy"] for r in rows]
    assert accuracy[0] == evaluate(mnist_model, data, ["natural"])["natural"]["accuracy"]
    assert accuracy[2] == evaluate(mnist_model, data, ["pgd20"], budget=Budget(EPS))["pgd20"]["accuracy"]
    assert all(b <= a for a, b in zip(accuracy, accuracy[1:])) and accuracy[-1] < accuracy[0]


def test_a_limited_attack_covers_only_the_first_examples(mnist_model, mnist_test):
    data = mnist_test.take(60)
    results = evaluate(mnist_model, data, ["natural", "fgsm", "pgd20"], budget=Budget(EPS), limits={"pgd20": 24})
    alone = evaluate(mnist_model, data.take(24), ["natural", "fgsm", "pgd20"], budget=Budget(EPS))
    assert (results["natural"]["n"], results["fgsm"]["n"], results["pgd20"]["n"]) == (60, 60, 24)
    assert results["pgd20"] == {**alone["pgd20"], "seconds": results["pgd20"]["seconds"]}
    assert results["all_attacks"]["n"] == 24
    assert results["all_attacks"]["accuracy"] == alone["all_attacks"]["accuracy"]


def test_results_record_the_steps_used(mnist_model, mnist_test):
    results = evaluate(mnist_model, mnist_test.take(20), ["natural", "pgd20", "cw-inf"], budget=Budget(EPS, steps=2))
    assert results["pgd20"]["steps"] == 2 and results["cw-inf"]["steps"] == 2 and "steps" not in results["natural"]


def test_aa_standard_equals_pyautoattack_by_hand(mnist_model, mnist_test):
    from pyautoattack import AutoAttack

    data = mnist_test.take(24)
    ours = evaluate(mnist_model, data, ["aa"], budget=Budget(EPS), batch_size=24)["aa"]["accuracy"]
    x, y = data.images.float() / 255, data.labels
    x_adv, _ = AutoAttack(mnist_model, eps=EPS, version="standard", seed=0).run_standard_evaluation(x, y, batch_size=24)
    with torch.no_grad():
        by_hand = mnist_model(x_adv).argmax(1) == y
    assert ours == pytest.approx(100 * by_hand.float().mean().item(), abs=0.01)  # ours is rounded to 2 decimals
    assert 0 < ours < evaluate(mnist_model, data, ["natural"])["natural"]["accuracy"]
