"""CRDND (the seed report's contrastive relation denoising distillation): its noise matrix (ACM) and relation loss
against direct computations written out here, and its loss on the toy batch."""

import math

import pytest
import torch
import torch.nn.functional as F
from toy_methods import C, build, close, loss_values

from acdistill.config import load_params
from acdistill.errors import AcdistillError
from acdistill.methods.crdnd import CRDND, noise_matrix, relation_loss


@pytest.mark.parametrize("k", [2, 3, 10])
def test_noise_matrix_has_the_stated_form_and_columns_sum_to_one(k):
    torch.manual_seed(k)
    a = torch.rand(k)
    m = noise_matrix(a)
    for i in range(k):
        for j in range(k):
            assert m[i, j].item() == pytest.approx(a[j].item() if i == j else (1 - a[j].item()) / (k - 1))
    assert torch.allclose(m.sum(0), torch.ones(k))
    assert torch.equal(noise_matrix(torch.ones(k)), torch.eye(k))


def relation_by_loops(anchor, positive, tau, weight):
    """-1/N sum_i w_i log( e^{cos(a_i, q_i)/tau} / sum over the 2N items except a_i of e^{cos(a_i, item)/tau} )."""
    n = len(anchor)
    items = list(positive) + list(anchor)
    total = 0.0
    for i in range(n):
        cos = [F.cosine_similarity(anchor[i], item, dim=0).item() for item in items]
        denominator = sum(math.exp(c / tau) for j, c in enumerate(cos) if j != n + i)
        total += weight[i] * -math.log(math.exp(cos[i] / tau) / denominator)
    return total / n


@pytest.mark.parametrize("weighted", [False, True])
def test_relation_loss_equals_a_double_loop(weighted):
    torch.manual_seed(0)
    anchor, positive = F.softmax(torch.randn(6, C), 1).double(), F.softmax(torch.randn(6, C), 1).double()
    weight = torch.rand(6).double() if weighted else None
    expected = relation_by_loops(anchor, positive, 0.5, weight.tolist() if weighted else [1.0] * 6)
    assert relation_loss(anchor, positive, 0.5, weight).item() == pytest.approx(expected, rel=1e-9)


def test_relation_loss_refuses_a_batch_of_one():
    with pytest.raises(AcdistillError, match="at least 2 images, got 1"):
        relation_loss(torch.rand(1, C), torch.rand(1, C), 0.5)


def test_golden_value(toy):
    assert loss_values("crdnd", toy) == close({"relation_nat": 0.395256906747818, "relation_adv": 1.5823709964752197})


def make(toy, **params):
    student, teacher, batch, x_adv = toy
    return build("crdnd", student, teacher, batch=batch, **params), batch, x_adv


def losses(method, batch, x_adv):
    torch.manual_seed(1)
    return {k: v.item() for k, v in method.loss(batch, x_adv).items()}


def test_acm_with_identity_equals_acm_off(toy):
    method, batch, x_adv = make(toy)
    assert torch.equal(noise_matrix(method.accuracy["nat"]), torch.eye(C))  # before the first epoch ends
    assert losses(method, batch, x_adv) == pytest.approx(losses(*make(toy, acm=False)), rel=1e-9)


def test_acm_takes_the_teachers_per_class_accuracy_of_the_last_epoch(toy):
    method, batch, x_adv = make(toy)
    method.on_epoch_start(0, 2)
    method.loss(batch, x_adv)
    log = method.on_epoch_end()
    with torch.no_grad():
        right = (method.teacher(batch.x).argmax(1) == batch.y).float()
    for c, expected in zip(batch.y.tolist(), right.tolist()):
        assert method.accuracy["nat"][c].item() == expected and log[f"acm/nat_diag_{c}"] == expected
    assert method.accuracy["nat"][3].item() == 1.0  # class 3 was not seen: stays at its last value
    with_noise = losses(method, batch, x_adv)
    method.load_state_dict(make(toy)[0].state_dict())  # back to identity
    assert with_noise != pytest.approx(losses(method, batch, x_adv))


def test_state_is_the_accuracy_that_m_is_built_from(toy):
    assert set(make(toy)[0].state_dict()) == {"accuracy_nat", "accuracy_adv"}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"lambda": 1.5}, "crdnd.lambda: Input should be less than or equal to 1"),
        ({"lambda": -0.1}, "crdnd.lambda: Input should be greater than or equal to 0"),
        ({"tau": 0}, "crdnd.tau: Input should be greater than 0"),
    ],
)
def test_crdnd_bad_params_name_the_parameter(section, message):
    with pytest.raises(AcdistillError, match=message):
        load_params(None, {"distill.method": "crdnd", "distill.crdnd": section})


def test_crdnd_lambda_is_read_from_params():
    params = load_params(None, {"distill.method": "crdnd", "distill.crdnd": {"lambda": 0.4}}).distill.method_params()
    assert isinstance(params, CRDND.Params) and params.lam == 0.4
