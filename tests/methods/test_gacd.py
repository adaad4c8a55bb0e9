"""GACD's pieces against direct, independent computations: Eq. 10 by loops, exact OT, the bank's rules."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from toy_methods import close, loss_values

from acdistill.attacks.ot import cosine_cost, sinkhorn_cost
from acdistill.budgets import TrainAttack
from acdistill.config import load_params
from acdistill.data import Batch, ImageSet
from acdistill.errors import AcdistillError
from acdistill.methods.gacd import GACD, GACDParams, MemoryBank, first_batch_log_z, reweighted_nce
from acdistill.models import create_model


def eq10_by_loops(pos, neg, weight, tau, z, n_data):
    """-1/B sum_i [w_i log h(t_i, s_i+) + sum_j w_i log(1 - h(t_i, s_ij-))], h = P / (P + k/N), P = e^{t.s/tau} / Z,
    with k = len(neg[i]), anchor i's count of negatives."""
    batch = len(neg)
    total = 0.0
    for i in range(batch):
        k = len(neg[i])
        p = math.exp(pos[i] / tau) / z
        total += weight[i] * math.log(p / (p + k / n_data))
        for j in range(k):
            p = math.exp(neg[i][j] / tau) / z
            total += weight[i] * math.log(1 - p / (p + k / n_data))
    return -total / batch


@pytest.mark.parametrize("weighted", [False, True])
def test_nce_equals_eq10_evaluated_by_loops(weighted):
    torch.manual_seed(0)
    pos, neg = torch.rand(5).double() * 2 - 1, torch.rand(5, 7).double() * 2 - 1  # cosines in [-1, 1]
    weight = torch.rand(5).double() if weighted else torch.ones(5).double()
    tau, n_data = 0.1, 50
    log_z = first_batch_log_z(pos, neg, tau=tau, n_data=n_data)
    z = n_data * torch.exp(torch.cat([pos[:, None], neg], 1) / tau).mean().item()  # CRD: Z = N * mean(exp)
    assert math.exp(log_z.item()) == pytest.approx(z, rel=1e-9)
    ours = reweighted_nce(pos, neg, weight, tau=tau, log_z=log_z, n_data=n_data).item()
    assert ours == pytest.approx(eq10_by_loops(pos.tolist(), neg.tolist(), weight.tolist(), tau, z, n_data), rel=1e-9)


def test_nce_stays_finite_where_exp_overflows():
    pos, neg = torch.ones(2), torch.full((2, 3), -1.0)
    loss = reweighted_nce(pos, neg, torch.ones(2), tau=0.001, log_z=torch.tensor(0.0), n_data=10)  # e^1000
    assert torch.isfinite(loss)


def toy_set(labels, indices=None):
    labels = torch.tensor(labels)
    n = len(labels)
    return ImageSet(
        "toy",
        torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
        labels,
        torch.arange(n) * 3 + 7 if indices is None else indices,
        4,
        "test",
    )


def test_negatives_never_share_the_anchor_class():
    torch.manual_seed(0)
    data = toy_set([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    bank = MemoryBank(data, 8, torch.float32)
    assert bank.available() == 6  # class 3 has 4 of the 10 images
    y = torch.tensor([0, 1, 2, 3] * 50)
    rows = bank.sample_negatives(y, 6)
    assert (data.labels[rows] != y[:, None]).all()
    # Every other-class image can be drawn: for class 3, rows 0-5.
    assert set(bank.sample_negatives(torch.full((400,), 3), 6).flatten().tolist()) == set(range(6))


def test_an_anchors_negatives_are_distinct_and_uniform_as_crd_draws_them():
    """CRD (RepDistiller) draws each anchor's k negatives without replacement; with replacement, k = 16384 of ~45 000
    other-class images repeat about 16 % of them."""
    torch.manual_seed(0)
    data = toy_set([0] * 10 + [1] * 20 + [2] * 30)  # pools of 50, 40 and 30 rows
    bank = MemoryBank(data, 8, torch.float32)
    y = torch.tensor([0, 1, 2]).repeat(2000)
    rows = bank.sample_negatives(y, 30)
    assert all(len(set(row)) == 30 for row in rows.tolist())
    assert (data.labels[rows] != y[:, None]).all()
    assert all(sorted(row) == list(range(30)) for row in rows[y == 2].tolist())  # k = the pool: all of it
    counts = torch.bincount(rows[y == 0].flatten(), minlength=60)[10:]  # class 0's pool: rows 10-59
    assert counts.sum() == 2000 * 30 and (counts - 2000 * 30 / 50).abs().max() < 100  # 1200 each, sd 22
    with pytest.raises(ValueError, match="31 negatives asked of a pool of 30"):
        bank.sample_negatives(y, 31)


def test_bank_update_moves_batch_rows_toward_the_embeddings_and_renormalizes():
    torch.manual_seed(0)
    data = toy_set([0, 1, 2, 3, 0, 1])
    bank = MemoryBank(data, 8, torch.float32)
    before = bank.rows.clone()
    assert torch.allclose(before.norm(dim=1), torch.ones(6))
    rows = bank.lookup(data.indices[torch.tensor([1, 4])])  # dataset indices 10 and 19 live in rows 1 and 4
    assert rows.tolist() == [1, 4]
    emb = F.normalize(torch.randn(2, 8), dim=1)
    bank.update(rows, emb, 0.5)
    assert torch.allclose(bank.rows[rows], F.normalize(0.5 * before[rows] + 0.5 * emb, dim=1))
    assert torch.equal(bank.rows[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    with pytest.raises(AcdistillError, match="not in the training set"):
        bank.lookup(torch.tensor([8]))


def test_fp16_bank_halves_memory_and_keeps_the_scores():
    torch.manual_seed(0)
    data = toy_set(list(range(4)) * 8)
    full = MemoryBank(data, 16, torch.float32)
    half = MemoryBank(data, 16, torch.float16)
    half.rows = full.rows.half()
    assert half.rows.element_size() * 2 == full.rows.element_size()
    t = F.normalize(torch.randn(3, 16), dim=1)
    assert torch.allclose(t @ half.rows.float().T, t @ full.rows.T, atol=2e-3)


@pytest.mark.parametrize("n", [3, 6, 10])
def test_sinkhorn_matches_exact_ot_and_its_gradient_is_the_derivative(n):
    torch.manual_seed(n)
    a, b = torch.randn(n, 16).double(), torch.randn(n, 16).double().requires_grad_(True)
    ours = sinkhorn_cost(cosine_cost(a, b))
    cost = cosine_cost(a, b).detach().numpy()
    rows, cols = linear_sum_assignment(cost)  # exact OT between uniform n-point sets is an assignment
    assert ours.item() == pytest.approx(cost[rows, cols].sum() / n, abs=0.01 * math.log(n) + 1e-3)  # bias <= reg log n
    (grad,) = torch.autograd.grad(ours, b)
    direction = torch.randn_like(b)
    step = 1e-6
    with torch.no_grad():
        numeric = (
            sinkhorn_cost(cosine_cost(a, b + step * direction)) - sinkhorn_cost(cosine_cost(a, b - step * direction))
        ) / (2 * step)
    assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-3, abs=1e-6)


def test_sinkhorn_is_float32_math_on_a_bfloat16_cost():
    """bf16 autocast hands the solver a bf16 cost (the features' product); scaled by 1 / reg it reaches 200, where
    bf16 resolves only whole units, so the solver must not run in it."""
    torch.manual_seed(0)
    cost = cosine_cost(torch.randn(32, 16), torch.randn(32, 16)).bfloat16()
    exact = sinkhorn_cost(cost.double()).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sinkhorn_cost(cost).item() == pytest.approx(exact, rel=1e-5)


def make_gacd(**params):
    torch.manual_seed(0)
    student = create_model("small_cnn")
    teacher = create_model("small_cnn").eval().requires_grad_(False)
    attack = TrainAttack(eps=8 / 255)
    return GACD(student, teacher, GACDParams(**params), attack), student, teacher


def cifar_batch(n=16):
    from acdistill.data import iterate, load_split

    data = load_split("cifar10", True, n)
    return data, next(iterate(data, n))


def test_scatter_attack_raises_the_ot_distance_within_the_ball(mirror):
    method, student, _ = make_gacd(scatter_steps=2, scatter_step_size=4 / 255)
    data, batch = cifar_batch()
    method.setup(data)
    torch.manual_seed(1)
    x_adv = method.perturb(batch)
    torch.manual_seed(1)
    start = (batch.x + torch.empty_like(batch.x).uniform_(-8 / 255, 8 / 255)).clamp(0, 1)
    assert (x_adv - batch.x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    student.eval()
    with torch.no_grad():
        clean = student.features(batch.x)

        def distance(x):
            return sinkhorn_cost(cosine_cost(clean, student.features(x))).item()

        assert distance(x_adv) > distance(start) > distance(batch.x)


def test_gradients_reach_student_and_heads_never_the_teacher(mirror):
    method, student, teacher = make_gacd()
    data, batch = cifar_batch()
    method.setup(data)
    terms = method.loss(batch, method.perturb(batch))
    assert set(terms) == {"nce", "nce_student_anchor", "ce"}
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def student_gradient_of_the_contrast(method, student, batch, x_adv, bank_seed):
    """The student's gradient from the NCE terms alone, with every bank's rows redrawn from bank_seed."""
    torch.manual_seed(bank_seed)
    for bank in method.banks().values():
        bank.rows = F.normalize(torch.randn_like(bank.rows), dim=1)
    method.log_z = method.log_z_student_anchor = torch.tensor(9.0)  # Z fixed, so only the scores can differ
    method.z_fixed = True
    student.zero_grad()
    torch.manual_seed(3)  # the same sampled negatives
    terms = method.loss(batch, x_adv)
    (terms["nce"] + terms.get("nce_student_anchor", 0)).backward()
    return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])


@pytest.mark.parametrize("symmetric", [False, True])
def test_only_the_student_anchored_half_pushes_the_student_away_from_its_negatives(mirror, symmetric):
    """Rows read from a bank are constants: with Eq. 10 alone the student's gradient ignores its negatives (the
    study's students collapsed to one direction); CRD's student-anchored half makes it depend on them."""
    method, student, _ = make_gacd(symmetric=symmetric, k=8)
    data, batch = cifar_batch()
    method.setup(data)
    x_adv = method.perturb(batch)
    one = student_gradient_of_the_contrast(method, student, batch, x_adv, bank_seed=1)
    other = student_gradient_of_the_contrast(method, student, batch, x_adv, bank_seed=2)
    assert one.abs().sum() > 0
    assert torch.allclose(one, other) is not symmetric


def test_the_student_anchored_half_is_eq_10_against_the_teacher_bank_and_both_banks_move(mirror):
    method, student, teacher = make_gacd(k=8, reweight=False)
    data, batch = cifar_batch()
    method.setup(data)
    before = {name: bank.rows.clone() for name, bank in method.banks().items()}
    torch.manual_seed(3)
    terms = method.loss(batch, batch.x)
    torch.manual_seed(3)
    neg_rows = method.bank.sample_negatives(batch.y, 8)
    with torch.no_grad():
        # embed_bn's standardization is batch norm in training mode without affine parameters
        t = F.normalize(F.batch_norm(method.embed_t(teacher.features(batch.x)), None, None, training=True), dim=1)
        s = F.normalize(F.batch_norm(method.embed_s(student.features(batch.x)), None, None, training=True), dim=1)
        neg = torch.einsum("bd,bkd->bk", s, before["teacher_bank"][neg_rows])
        expected = reweighted_nce(
            (s * t).sum(1),
            neg,
            torch.ones(len(batch)),
            tau=0.1,
            log_z=first_batch_log_z((s * t).sum(1), neg, tau=0.1, n_data=len(data)),
            n_data=len(data),
        )
    assert terms["nce_student_anchor"].item() == pytest.approx(expected.item(), rel=1e-5)
    rows = method.bank.lookup(batch.index)
    assert torch.allclose(
        method.teacher_bank.rows[rows], F.normalize(before["teacher_bank"][rows] + t, dim=1), atol=1e-6
    )
    assert torch.allclose(method.bank.rows[rows], F.normalize(before["bank"][rows] + s, dim=1), atol=1e-6)


PAPER_LITERAL = {"negatives": "batch", "symmetric": False, "embed_bn": False}


def test_paper_literal_nce_is_eq10_against_the_students_fresh_embeddings_of_other_classes(mirror):
    """Algorithm 1: s- = f^s(x-), here for every clean image of another class in the batch, with each anchor's k
    the count of its negatives."""
    method, student, teacher = make_gacd(**PAPER_LITERAL, reweight=False)
    data, batch = cifar_batch()
    method.setup(data)
    x_adv = method.perturb(batch)
    terms = method.loss(batch, x_adv)
    assert set(terms) == {"nce", "ce"} and method.banks() == {}
    with torch.no_grad():
        t = F.normalize(method.embed_t(teacher.features(x_adv)), dim=1).double()
        s = F.normalize(method.embed_s(student.features(x_adv)), dim=1).double()
        clean = F.normalize(method.embed_s(student.features(batch.x)), dim=1).double()
    y = batch.y.tolist()
    pos = (t * s).sum(1).tolist()
    neg = [[(t[i] @ clean[j]).item() for j in range(len(y)) if y[j] != y[i]] for i in range(len(y))]
    scores = [p / 0.1 for p in pos] + [n / 0.1 for row in neg for n in row]
    z = len(data) * sum(math.exp(v) for v in scores) / len(scores)  # CRD's Z from this first batch
    assert terms["nce"].item() == pytest.approx(eq10_by_loops(pos, neg, [1.0] * len(y), 0.1, z, len(data)), rel=1e-5)


def nce_gradient(method, student, batch, x_adv):
    student.zero_grad()
    method.log_z = torch.tensor(9.0)  # Z fixed, so that only the scores can differ
    method.z_fixed = True
    method.loss(batch, x_adv)["nce"].backward()
    return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])


@pytest.mark.parametrize("negatives", ["bank", "batch"])
def test_paper_literal_negatives_push_the_student_and_bank_rows_do_not(mirror, negatives):
    """The same positives with other clean images as negatives: Eq. 10's student gradient changes only where the
    student embeds its negatives afresh."""
    method, student, _ = make_gacd(**{**PAPER_LITERAL, "negatives": negatives}, k=8)
    data, batch = cifar_batch()
    method.setup(data)
    x_adv = method.perturb(batch)
    torch.manual_seed(3)  # the same bank negatives
    one = nce_gradient(method, student, batch, x_adv)
    others = Batch(batch.x.flip(0), batch.y, batch.index)  # the same labels, other images
    torch.manual_seed(3)
    other = nce_gradient(method, student, others, x_adv)
    assert one.abs().sum() > 0
    assert torch.allclose(one, other) is (negatives == "bank")


def test_paper_literal_state_holds_heads_and_z_and_no_bank(mirror):
    data, batch = cifar_batch()
    method, _, _ = make_gacd(**PAPER_LITERAL)
    method.setup(data)
    method.loss(batch, batch.x)
    state = method.state_dict()
    assert {key.split(".")[0] for key in state} == {
        "embed_t",
        "embed_s",
        "log_z",
        "log_z_student_anchor",
        "_extra_state",
    }
    other, _, _ = make_gacd(**PAPER_LITERAL)
    other.setup(data)
    other.load_state_dict(state)
    assert torch.equal(other.log_z, method.log_z) and torch.equal(other.embed_s.weight, method.embed_s.weight)


def test_golden_value(toy):
    # each anchor's 3 negatives here are its whole pool, each drawn once
    assert loss_values("gacd", toy) == close(
        {"nce": 0.7341806888580322, "nce_student_anchor": 0.6754052639007568, "ce": 1.6038143634796143}
    )


def test_symmetric_needs_bank_negatives():
    with pytest.raises(AcdistillError, match="set symmetric: false"):
        load_params(None, {"distill.method": "gacd", "distill.gacd": {"negatives": "batch"}})


def test_the_gpu_preset_runs_the_paper_literal_variant():
    from conftest import REPO

    params = load_params(REPO / "configs" / "gacd-resnet18-cifar10.yaml").distill.method_params()
    assert {key: getattr(params, key) for key in PAPER_LITERAL} == PAPER_LITERAL


def test_reweight_false_gives_unit_weights_and_k_is_capped_with_a_warning(mirror, capsys):
    data, batch = cifar_batch()
    for reweight in (True, False):
        method, _, _ = make_gacd(reweight=reweight, k=1000)
        method.setup(data)
        assert method.k == method.bank.available() < 1000
        x_adv = method.perturb(batch)
        torch.manual_seed(2)
        nce = method.loss(batch, x_adv)["nce"]
        if reweight:
            weighted = nce
        else:
            assert nce != weighted  # an untrained teacher is far from confident: weights matter
    assert "warning: gacd: k=1000 negatives asked" in capsys.readouterr().err


@pytest.mark.parametrize("embed_bn", [True, False])
def test_with_embed_bn_a_direction_common_to_every_embedding_cannot_change_the_loss(embed_bn):
    """The study's linear heads grew the features' common component until every embedding pointed one way, and
    the contrast then carried no class information (RESULTS.md). Standardized embeddings have no such direction."""
    method, _, _ = make_gacd(embed_bn=embed_bn, k=4)
    data = ImageSet(
        "toy", torch.zeros(12, 3, 1, 1, dtype=torch.uint8), torch.arange(12) % 3, torch.arange(12), 3, "toy"
    )
    method.setup(data)
    torch.manual_seed(0)
    t_embedded, s_embedded = torch.randn(6, 128), torch.randn(6, 128)
    y, common = torch.arange(6) % 3, 20 * torch.randn(128)
    neg_rows, weight = method.bank.sample_negatives(y, 4), torch.ones(6)

    def nce(shift):
        method.log_z = method.log_z_student_anchor = torch.tensor(9.0)
        method.z_fixed = True
        terms, _, _ = method.contrast_terms(t_embedded + shift, s_embedded + shift, neg_rows, weight)
        return terms["nce"].item() + terms["nce_student_anchor"].item()

    assert (nce(common) == pytest.approx(nce(0), rel=1e-4)) is embed_bn


def test_state_round_trip_restores_bank_heads_and_z(mirror):
    data, batch = cifar_batch()
    method, _, _ = make_gacd()
    method.setup(data)
    method.loss(batch, batch.x)
    state = method.state_dict()
    other, _, _ = make_gacd()
    torch.manual_seed(5)
    other.setup(data)
    other.load_state_dict(state)
    assert torch.equal(other.bank.rows, method.bank.rows) and torch.equal(other.log_z, method.log_z)
    assert torch.equal(other.teacher_bank.rows, method.teacher_bank.rows)
    assert torch.equal(other.log_z_student_anchor, method.log_z_student_anchor)
    assert torch.equal(other.embed_t.weight, method.embed_t.weight)
    with pytest.raises(RuntimeError, match="size mismatch for bank.rows"):  # the trainer says it in one line
        small, _, _ = make_gacd()
        small.setup(data.take(8))
        small.load_state_dict(state)
    with pytest.raises(RuntimeError, match='Missing key.*"teacher_bank.rows"'):
        one_sided, _, _ = make_gacd(symmetric=False)
        one_sided.setup(data)
        method.load_state_dict(one_sided.state_dict())


def test_a_state_saved_before_the_first_batch_leaves_z_to_the_next_batch(mirror):
    data, batch = cifar_batch()
    unused, _, _ = make_gacd()
    unused.setup(data)
    method, _, _ = make_gacd()
    method.setup(data)
    method.load_state_dict(unused.state_dict())
    assert not method.z_fixed
    method.loss(batch, batch.x)
    assert method.z_fixed and method.log_z != 0 and method.log_z_student_anchor != 0


@pytest.mark.parametrize(
    "override, message",
    [
        ({"distill.gacd": {"k": 0}}, "distill: gacd.k: Input should be greater than 0"),
        ({"distill.gacd": {"tau": 0}}, "distill: gacd.tau: Input should be greater than 0"),
        ({"distill.gacd": {"tau": -1}}, "distill: gacd.tau: Input should be greater than 0"),
    ],
)
def test_bad_params_name_the_parameter(override, message):
    with pytest.raises(AcdistillError, match=message):
        load_params(None, {"distill.method": "gacd", **override})


def test_batch_without_indices_and_teacher_without_features_are_refused(mirror):
    method, _, _ = make_gacd()
    data, batch = cifar_batch()
    method.setup(data)
    with pytest.raises(AcdistillError, match="dataset index"):
        method.loss(Batch(batch.x, batch.y, None), batch.x)
    with pytest.raises(AcdistillError, match="teacher has no features"):
        GACD(
            create_model("small_cnn"),
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)),
            GACDParams(),
            TrainAttack(),
        )


def test_nce_is_computed_in_float32_under_bf16_autocast(mirror):
    method, _, _ = make_gacd()
    data, batch = cifar_batch()
    method.setup(data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = method.loss(batch, batch.x)
    assert terms["nce"].dtype == torch.float32 and torch.isfinite(terms["nce"])


def test_class_cosines_equal_the_mean_over_pairs_of_rows():
    torch.manual_seed(0)  # rows whose mean cosine across classes is not within float32 rounding of 0
    data = ImageSet(
        "toy", torch.zeros(40, 3, 32, 32, dtype=torch.uint8), torch.arange(40) % 3, torch.arange(40), 3, "test"
    )
    bank = MemoryBank(data, 8, torch.float32)
    bank.rows = F.normalize(torch.randn(40, 8) + 2 * F.one_hot(bank.labels, 8).float(), dim=1)  # classes apart
    products, same = bank.rows @ bank.rows.T, bank.labels[:, None] == bank.labels[None, :]
    distinct = ~torch.eye(40, dtype=torch.bool)
    within, across = bank.class_cosines()
    assert within == pytest.approx(products[same & distinct].mean().item(), rel=1e-5)
    assert across == pytest.approx(products[~same].mean().item(), rel=1e-5)
    assert within > across
    one_per_class = ImageSet("toy", data.images[:3], data.labels[:3], data.indices[:3], 3, "test")
    assert math.isnan(MemoryBank(one_per_class, 8, torch.float32).class_cosines()[0])
