"""Every public function that takes a model gives it back as it found it: train/eval mode of each submodule,
batch-norm running statistics, requires_grad, and no gradient left in .grad (acdistill/untouched.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acdistill import evaluate
from acdistill.analysis import (
    adversarial_images,
    correlation_difference,
    feature_cloud,
    logits_of,
    targeted_pgd,
)
from acdistill.attacks import EVAL_ATTACKS, Budget, cw_l2, fgsm
from acdistill.data import ImageSet
from acdistill.engine.evaluate import check_model_outputs, correct_mask, eps_sweep
from acdistill.engine.probe import extract_features, linear_probe
from acdistill.engine.sanity import sanity_checks

EPS = 0.003  # the test model is far from robust: at this budget the attacks fool about half of the images


class Net(nn.Module):
    """features -> head with both batch-norm kinds: BatchNorm1d in train mode fails on a batch of one."""

    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(6)
        self.bn1d = nn.BatchNorm1d(6)
        self.linear = nn.Linear(6, 10)

    def features(self, x):
        return self.bn1d(F.adaptive_avg_pool2d(F.relu(self.bn2d(self.conv(x))), 1).flatten(1))

    def head(self, f):
        return self.linear(f)

    def forward(self, x):
        return self.head(self.features(x))


def caller_model(images: torch.Tensor) -> Net:
    """In train mode, as a training loop would hand it over, with one frozen batch norm (mixed modes). Its running
    statistics are those of `images`, so that its outputs vary from image to image; a train-mode forward pass on
    any part of them would move the statistics."""
    torch.manual_seed(0)
    net = Net()
    # momentum None keeps a cumulative average: after one batch, that batch's statistics
    for bn in (net.bn2d, net.bn1d):
        bn.momentum = None
    with torch.no_grad():
        net(images.float() / 255)
    for bn in (net.bn2d, net.bn1d):
        bn.momentum = 0.1
    net.bn2d.eval()
    return net


@pytest.fixture(scope="module")
def data(mnist_test):
    """16 MNIST images labelled with the eval-mode model's own predictions, so that every attack has correctly
    classified examples to work on."""
    images = mnist_test.images[:16]
    with torch.no_grad():
        labels = caller_model(images).eval()(images.float() / 255).argmax(1)
    return ImageSet("mnist", images, labels, torch.arange(16), 10, "test")


def as_found(net: nn.Module):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [m.training for m in net.modules()],
        [p.requires_grad for p in net.parameters()],
    )


def assert_untouched(net: nn.Module, before) -> None:
    state, modes, grads = before
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()), "weights or buffers changed"
    assert [m.training for m in net.modules()] == modes, "train/eval modes changed"
    assert [p.requires_grad for p in net.parameters()] == grads, "requires_grad changed"
    assert all(p.grad is None for p in net.parameters()), "gradients were written into .grad"


def x_y(data):
    return data.images.float() / 255, data.labels


def probe(net, data):
    return linear_probe(
        net,
        data,
        epochs=1,
        lr=0.01,
        weight_decay=0.0,
        batch_size=8,
        seed=0,
        device="cpu",
    )


ENTRY_POINTS = {
    "evaluate": lambda net, data: evaluate(net, data, ["natural", "fgsm", "pgd20", "cw2"], budget=Budget(EPS, steps=2)),
    "eps_sweep": lambda net, data: eps_sweep(net, data, "pgd20", [0.0, EPS], budget=Budget(EPS, steps=2)),
    "correct_mask": lambda net, data: correct_mask(
        net,
        data,
        EVAL_ATTACKS.get("natural").run,
        budget=Budget(EPS),
        batch_size=8,
        device="cpu",
    ),
    "check_model_outputs": lambda net, data: check_model_outputs(net, data, "cpu"),
    "sanity_checks": lambda net, data: sanity_checks(
        net, data, Budget(EPS), steps=2, more_steps_factor=2, square_queries=5
    ),
    "fgsm": lambda net, data: fgsm(net, *x_y(data), EPS),
    "cw_l2": lambda net, data: cw_l2(net, *x_y(data), steps=3),
    "extract_features": lambda net, data: extract_features(net, data, batch_size=8, device="cpu"),
    "linear_probe": lambda net, data: probe(net, data),
    "logits_of": lambda net, data: logits_of(net, x_y(data)[0]),
    "correlation_difference": lambda net, data: correlation_difference(net, net, x_y(data)[0]),
    "adversarial_images": lambda net, data: adversarial_images(
        net, data, Budget(EPS), batch_size=8, seed=0, device="cpu"
    ),
    "targeted_pgd": lambda net, data: targeted_pgd(net, x_y(data)[0], torch.zeros(16, dtype=torch.long), Budget(EPS)),
    "feature_cloud": lambda net, data: feature_cloud(
        net,
        data,
        (int(data.labels[0]), int(data.labels[1])),
        per_class=4,
        budget=Budget(EPS),
        seed=0,
        device="cpu",
    ),
}
# aa's Square attack alone takes 5000 queries per image; aa-fast runs with 2 iterations.
ATTACKS = [name for name in EVAL_ATTACKS.names() if name != "aa"]


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_each_entry_point_leaves_the_model_as_it_found_it(data, mnist_test, name):
    net = caller_model(data.images)
    before = as_found(net)
    # t-SNE needs two classes with a few images each, which the model's own predictions need not give
    ENTRY_POINTS[name](net, mnist_test.take(40) if name == "feature_cloud" else data)
    assert_untouched(net, before)


@pytest.mark.parametrize("name", ATTACKS)
def test_each_attack_leaves_the_model_as_it_found_it(data, name):
    net = caller_model(data.images)
    before = as_found(net)
    x, y = x_y(data)
    EVAL_ATTACKS.get(name).run(net, x, y, Budget(EPS, steps=2))
    assert_untouched(net, before)


@pytest.mark.slow
def test_autoattack_standard_leaves_the_model_as_it_found_it(data):
    """FAB, part of the standard version, calls backward on the model's outputs."""
    net = caller_model(data.images)
    before = as_found(net)
    EVAL_ATTACKS.get("aa").run(net, *x_y(data.take(4)), Budget(EPS))
    assert_untouched(net, before)


def test_a_model_in_train_mode_is_evaluated_as_its_eval_mode_copy(data):
    """The accuracies are those of the same model in eval mode: no forward pass in train mode moves its running
    statistics first, and BatchNorm1d does not meet a batch of one in train mode."""
    attacks, budget = ["natural", "fgsm", "pgd20"], Budget(EPS)
    ours = evaluate(caller_model(data.images), data, attacks, budget=budget)
    reference = evaluate(caller_model(data.images).eval(), data, attacks, budget=budget)
    for name in attacks + ["all_attacks"]:
        assert {**ours[name], "seconds": 0} == {**reference[name], "seconds": 0}
    # the attacks had examples to work on, and changed some
    assert 0 < ours["fgsm"]["accuracy"] < 100


def test_the_probe_holds_a_copy_whose_mode_does_not_reach_the_callers_model(data):
    net = caller_model(data.images)
    probed = probe(net, data)
    probed.train()
    assert net.training and not net.bn2d.training
    assert not any(p.requires_grad for p in probed.parameters())
