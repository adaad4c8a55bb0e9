import re

import pytest
import torch

from acdistill import evaluate
from acdistill.attacks import EVAL_ATTACKS, Budget, EvalAttack
from acdistill.data import ImageSet
from acdistill.errors import AcdistillError

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


def as_float(data):
    """The same images as float pixels in [0, 1]."""
    return ImageSet(data.name, data.images.float() / 255, data.labels, data.indices, data.num_classes, data.source)


def test_float_images_in_0_1_evaluate_as_their_uint8_originals(mnist_model, mnist_test):
    data = mnist_test.take(64)
    attacks = ["natural", "pgd20"]
    uint8 = evaluate(mnist_model, data, attacks, budget=Budget(EPS))
    floats = evaluate(mnist_model, as_float(data), attacks, budget=Budget(EPS))
    assert [floats[a]["accuracy"] for a in attacks] == [uint8[a]["accuracy"] for a in attacks]
    assert uint8["natural"]["accuracy"] > 50


@pytest.mark.parametrize(
    "images, message",
    [
        (lambda x: x.float(), "float images must be in [0, 1]; for 0-255 values pass uint8 images"),
        (lambda x: x.float() / 255 - 0.5, "values from -0.5 to 0.5: float images must be in [0, 1]"),
        (lambda x: x.int(), "are torch.int32; images are uint8 (0-255) or float in [0, 1]"),
        (lambda x: x[:, 0], "not [N, C, H, W]"),
    ],
    ids=["float 0-255", "float centred", "int32", "no channel axis"],
)
def test_images_on_another_scale_are_refused(mnist_test, images, message):
    data = mnist_test.take(8)
    with pytest.raises(AcdistillError, match=re.escape(message)):
        ImageSet(data.name, images(data.images), data.labels, data.indices, data.num_classes, data.source)


def test_an_attack_refuses_inputs_outside_0_1(mnist_model, mnist_test):
    x, y = mnist_test.images[:4].float(), mnist_test.labels[:4]
    with pytest.raises(AcdistillError, match=re.escape("attack 'pgd20': inputs are torch.float32 with values from 0")):
        EVAL_ATTACKS.get("pgd20").run(mnist_model, x, y, Budget(EPS))


GRADIENT_ATTACKS = [name for name in EVAL_ATTACKS.names() if name not in ("natural", "aa")]  # aa: see aa-fast


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_every_attack_gives_the_same_result_under_no_grad(mnist_model, mnist_test, attack):
    data, budget = mnist_test.take(16), Budget(EPS, steps=3)
    outside = evaluate(mnist_model, data, [attack], budget=budget)[attack]
    with torch.no_grad():
        inside = evaluate(mnist_model, data, [attack], budget=budget)[attack]
    assert inside["correct"] == outside["correct"] and outside["accuracy"] < 100


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_inference_mode_is_refused_in_one_line_but_for_clean_accuracy(mnist_model, mnist_test, attack):
    data = mnist_test.take(8)
    with torch.inference_mode():
        with pytest.raises(AcdistillError, match=r"^evaluate needs gradients, which torch.inference_mode\(\) turns"):
            evaluate(mnist_model, data, ["natural", attack], budget=Budget(EPS, steps=2))
        assert evaluate(mnist_model, data, ["natural"])["natural"]["n"] == 8


class InputNoise(torch.nn.Module):
    """A randomized defense: Gaussian noise at the input, in eval mode too."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.5 * torch.randn_like(x)).clamp(0, 1))


def test_a_randomized_model_is_warned_of_and_its_results_do_not_follow_the_callers_seed(
    mnist_model, mnist_test, capsys
):
    model, data = InputNoise(mnist_model), mnist_test.take(64)
    runs = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.random.get_rng_state()
        runs.append(evaluate(model, data, ["natural", "fgsm"], budget=Budget(EPS)))
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is left as it was
    assert runs[0]["natural"]["correct"] == runs[1]["natural"]["correct"]
    assert runs[0]["fgsm"]["correct"] == runs[1]["fgsm"]["correct"]
    assert "warning: the model's outputs differ between two calls on the same images" in capsys.readouterr().err
    evaluate(mnist_model, data, ["natural"])
    assert "randomized" not in capsys.readouterr().err
