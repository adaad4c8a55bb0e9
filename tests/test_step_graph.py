"""speed.step_graph (the whole step captured and replayed, engine/step_graph.py) trains as the eager steps do: bit for
bit in fp32, closely in bf16.

The equality tests need a CUDA device and are skipped without one (CI has none); they ran on the device machine
(BENCHMARKS.md). The refusals are checked everywhere."""

import math

import pytest
import torch

from acdistill.config import SpeedParams, TrainParams, load_params
from acdistill.data import ImageSet
from acdistill.engine import Trainer
from acdistill.errors import AcdistillError
from acdistill.methods import METHODS
from acdistill.models import create_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
GRAPHED = [name for name in METHODS.names() if METHODS.get(name).cuda_graphs == "whole_step"]


def random_set(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet("toy", images, torch.randint(0, 10, (n,), generator=g), torch.arange(n), 10, "test")


def train(method: str, device: torch.device, **settings):
    """Two epochs of 6 full batches and a last, smaller one: eager warm-up, capture, replays, an eager last batch,
    and a capture anew at the second epoch's first batch; cosine schedule, so the lr changes every step."""
    cfg = TrainParams(method=method, epochs=2, batch_size=16, monitor_n=0, attack={"steps": 2})
    torch.manual_seed(0)
    teacher = create_model("resnet20").to(device).eval().requires_grad_(False)
    cls = METHODS.get(method)
    m = cls(
        create_model("resnet20").to(device), teacher if cls.needs_teacher else None, cfg.method_params(), cfg.attack
    )
    history = Trainer(m, cfg, seed=1, device=device, speed=SpeedParams(**settings)).fit(
        random_set(100), augment=True, resume=False
    )
    return [{k: v for k, v in r.items() if k.startswith("loss/")} for r in history], m.student.state_dict()


@cuda
@pytest.mark.parametrize("method", GRAPHED)
def test_replayed_steps_equal_eager_steps_bit_for_bit(method, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    device = torch.device("cuda")
    eager_losses, eager_weights = train(method, device)
    graph_losses, graph_weights = train(method, device, step_graph=True)
    assert graph_losses == eager_losses
    for (name, a), b in zip(graph_weights.items(), eager_weights.values()):
        assert torch.equal(a, b), name


@cuda
def test_replayed_steps_stay_close_to_eager_steps_under_bf16_and_channels_last(monkeypatch):
    """Not bit for bit: on an H100 the first epoch's mean loss differed in the fifth digit and the weights by 0.2 %
    after two epochs. The cause is not isolated (under capture autocast's weight cache is off, and cuDNN may choose
    other kernels). The bounds sit 5 to 20 times above what was seen; no broken replay was tried against them."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    device = torch.device("cuda")
    fast = {"amp": True, "channels_last": True}
    eager_losses, eager_weights = train("rslad", device, **fast)
    graph_losses, graph_weights = train("rslad", device, step_graph=True, **fast)
    for graph, eager in zip(graph_losses, eager_losses):
        assert graph == pytest.approx(eager, rel=1e-3)
    flat = [torch.cat([w.float().flatten() for w in weights.values()]) for weights in (graph_weights, eager_weights)]
    assert (flat[0] - flat[1]).norm() <= 1e-2 * flat[1].norm()


def test_step_graph_refuses_methods_with_per_step_state_and_falls_back_on_cpu(capsys):
    assert "rslad" in GRAPHED and "gacd" not in GRAPHED  # GACD rebinds its bank and log Z every step
    cfg, speed = TrainParams(method="gacd", gacd={"k": 4}), SpeedParams(step_graph=True)
    student, teacher = create_model("small_cnn"), create_model("small_cnn")
    method = METHODS.get("gacd")(student, teacher, cfg.method_params(), cfg.attack)
    Trainer(method, cfg, seed=0, device=torch.device("cpu"), speed=speed)  # no CUDA: a warning, and eager steps
    assert "speed.step_graph needs a CUDA device" in capsys.readouterr().err
    if torch.cuda.is_available():
        with pytest.raises(AcdistillError, match="gacd keeps per-step state"):
            Trainer(method, cfg, seed=0, device=torch.device("cuda"), speed=speed)


def test_speed_settings_are_left_out_of_fingerprints_and_set_once():
    cfg = TrainParams(method="rslad")
    plain = Trainer(
        METHODS.get("rslad")(create_model("small_cnn"), create_model("small_cnn"), cfg.method_params(), cfg.attack),
        cfg,
        seed=0,
        device=torch.device("cpu"),
    )
    fast = Trainer(
        METHODS.get("rslad")(create_model("small_cnn"), create_model("small_cnn"), cfg.method_params(), cfg.attack),
        cfg,
        seed=0,
        device=torch.device("cpu"),
        speed=SpeedParams(amp=True, channels_last=True, step_graph=True, cudnn_benchmark=True),
    )
    assert plain.fingerprint == fast.fingerprint  # a run may resume with them switched
    for key, moved in [("amp", "amp"), ("channels_last", "channels_last"), ("cuda_graph", "step_graph")]:
        with pytest.raises(AcdistillError, match=f"'{key}' is now set once for every training stage, as speed.{moved}"):
            load_params(None, {f"distill.{key}": True})


@cuda
def test_a_graphed_compiled_run_with_its_per_epoch_monitor():
    """compile: true with step_graph and cuDNN's search, and between epochs the monitor's clean and PGD evaluation
    in eval mode: the run goes through, and its first epoch's loss is that of the same run without them, to 1 %.
    The second epoch is not compared: on an H100 it differed by 4 % (0.01958 against 0.01875). bf16, inductor's
    fusions and cuDNN's search each round differently, and a run that isolates step_graph's share is not done."""
    device = torch.device("cuda")
    cfg = TrainParams(method="rslad", epochs=2, batch_size=16, monitor_n=32, attack={"steps": 2})

    def run(**fast):
        torch.manual_seed(0)
        teacher = create_model("resnet20").to(device).eval().requires_grad_(False)
        method = METHODS.get("rslad")(create_model("resnet20").to(device), teacher, cfg.method_params(), cfg.attack)
        trainer = Trainer(method, cfg, seed=1, device=device, speed=SpeedParams(amp=True, channels_last=True, **fast))
        return trainer.fit(random_set(100), random_set(32), augment=True, resume=False)

    plain = run()
    fast = run(compile=True, step_graph=True, cudnn_benchmark=True)
    assert fast[0]["loss/total"] == pytest.approx(plain[0]["loss/total"], rel=1e-2)
    for record in fast:
        assert all(math.isfinite(record[key]) for key in ("loss/total", "clean_acc", "pgd10_acc"))
