"""The fast paths compute the same step as a plain one: the trainer's loop (in-memory batches, batched augmentation,
the teacher's clean logits computed once per batch) is bit-identical to a plain fp32 loop; channels_last matches
the plain losses and gradients to float tolerance; bf16 autocast stays close."""

import pytest
import torch

from acdistill.budgets import TrainAttack
from acdistill.config import SpeedParams, TrainParams
from acdistill.data import Batch, ImageSet, load_split
from acdistill.engine import Trainer
from acdistill.engine.trainer import _epoch_seed
from acdistill.methods import METHODS
from acdistill.models import create_model


@pytest.mark.parametrize("method", ["rslad", "gacd"])
def test_the_trainer_equals_a_plain_fp32_loop_bit_for_bit(mirror, method):
    data = load_split("cifar10", True, 64, data_dir=mirror)
    cfg = TrainParams(
        method=method,
        epochs=1,
        batch_size=32,
        monitor_n=0,
        schedule="constant",
        attack={"steps": 2},
        **({"gacd": {"k": 8}} if method == "gacd" else {}),
    )
    teacher = create_model("small_cnn").eval().requires_grad_(False)

    def fresh():
        torch.manual_seed(0)
        student = create_model("small_cnn")
        return METHODS.get(method)(student, teacher, cfg.method_params(), cfg.attack)

    piped = fresh()
    Trainer(piped, cfg, seed=3, device=torch.device("cpu")).fit(data, augment=False, resume=False)

    plain = fresh()
    optimizer = torch.optim.SGD(
        list(plain.student.parameters()) + list(plain.parameters()),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    plain.setup(data)  # where the trainer calls it: the GACD bank's random start comes from the same RNG state
    plain.student.train()
    torch.manual_seed(_epoch_seed(3, 0))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(_epoch_seed(3, 0)))
    for start in range(0, len(data), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        batch = Batch(data.images[idx].float() / 255, data.labels[idx], data.indices[idx])
        x_adv = plain.perturb(batch)
        plain._teacher_cache = None  # the plain loop runs the teacher again for the loss
        loss = sum(plain.loss(batch, x_adv).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, a), b in zip(piped.student.state_dict().items(), plain.student.state_dict().values()):
        assert torch.equal(a, b), name


def step(method_name: str, *, channels_last: bool = False, amp: bool = False):
    torch.manual_seed(0)
    student = create_model("resnet20")
    teacher = create_model("resnet20").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,), generator=g)
    data = ImageSet("toy", images, labels, torch.arange(16), 10, "test")
    x = images.float() / 255
    x_adv = (x + (8 / 255) * torch.empty_like(x).uniform_(-1, 1, generator=g)).clamp(0, 1)
    if channels_last:
        student.to(memory_format=torch.channels_last)
        x, x_adv = x.contiguous(memory_format=torch.channels_last), x_adv.contiguous(memory_format=torch.channels_last)
    cls = METHODS.get(method_name)
    extra = {"k": 8} if method_name == "gacd" else {}
    method = cls(student, teacher, cls.Params(**extra), TrainAttack())
    method.setup(data)
    student.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        terms = method.loss(Batch(x, labels, torch.arange(16)), x_adv)
    sum(terms.values()).backward()
    grads = {n: p.grad.float().clone() for n, p in student.named_parameters()}
    return {k: v.item() for k, v in terms.items()}, grads


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


@pytest.mark.parametrize("method", ["rslad", "ard", "crdnd", "gacd"])
def test_channels_last_gives_the_plain_losses_and_gradients(method):
    plain_terms, plain_grads = step(method)
    fast_terms, fast_grads = step(method, channels_last=True)
    assert fast_terms == pytest.approx(plain_terms, rel=1e-5, abs=1e-12)
    # Other convolution kernels sum in another order; through 19 train-mode batch norms of a fresh network that
    # moves single tensors by up to 1 % (measured 0.95 % at most), the whole gradient by far less.
    for name, g in plain_grads.items():
        assert (fast_grads[name] - g).norm() <= 0.02 * g.norm() + 1e-8, name
    assert (flat(fast_grads) - flat(plain_grads)).norm() <= 5e-3 * flat(plain_grads).norm()  # measured <= 0.24 %


@pytest.mark.parametrize("method", ["rslad", "ard", "crdnd", "gacd"])
def test_bf16_autocast_stays_close_to_fp32(method):
    plain_terms, plain_grads = step(method)
    amp_terms, amp_grads = step(method, amp=True)
    assert amp_terms == pytest.approx(plain_terms, rel=0.02, abs=1e-6)  # bf16 keeps 8 bits of mantissa
    cosine = torch.nn.functional.cosine_similarity(flat(amp_grads), flat(plain_grads), dim=0).item()
    assert cosine > 0.98  # measured 0.992 (gacd) to 0.998


def test_compile_trains_to_the_plain_losses_and_weights(mirror):
    """`compile: true` (torch.compile, inductor on CPU) runs the same math: losses and weights after a few steps
    match the eager trainer's to float tolerance; fused kernels sum in another order, so not bit for bit."""
    data = load_split("cifar10", True, 64, data_dir=mirror)
    results = []
    for compile_ in (False, True):
        cfg = TrainParams(
            method="rslad", epochs=1, batch_size=32, monitor_n=0, schedule="constant", attack={"steps": 2}
        )
        torch.manual_seed(0)
        teacher = create_model("small_cnn").eval().requires_grad_(False)
        method = METHODS.get("rslad")(create_model("small_cnn"), teacher, cfg.method_params(), cfg.attack)
        history = Trainer(method, cfg, seed=3, device=torch.device("cpu"), speed=SpeedParams(compile=compile_)).fit(
            data, augment=True, resume=False
        )
        assert (method.student._compiled_call_impl is not None) == compile_  # what nn.Module.compile sets
        results.append((history[0], torch.cat([p.detach().flatten() for p in method.student.parameters()])))
    (plain, plain_weights), (compiled, compiled_weights) = results
    for term in ("loss/kl_adv", "loss/kl_nat"):
        assert compiled[term] == pytest.approx(plain[term], rel=1e-4), term
    assert (compiled_weights - plain_weights).norm() <= 1e-4 * plain_weights.norm()


def test_cuda_graphs_of_the_forward_refuse_gacd():
    from acdistill.errors import AcdistillError

    cfg = TrainParams(method="gacd")
    torch.manual_seed(0)
    teacher = create_model("small_cnn").eval().requires_grad_(False)
    method = METHODS.get("gacd")(create_model("small_cnn"), teacher, cfg.method_params(), cfg.attack)
    with pytest.raises(AcdistillError, match="reduce-overhead .* does not work with gacd"):
        Trainer(method, cfg, seed=0, device=torch.device("cpu"), speed=SpeedParams(compile="reduce-overhead"))
