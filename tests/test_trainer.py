import pytest
import torch

from acdistill.config import SpeedParams, TrainParams
from acdistill.data import load_split
from acdistill.engine import Trainer
from acdistill.engine.trainer import lr_factor
from acdistill.errors import AcdistillError
from acdistill.methods import METHODS
from acdistill.models import create_model


def make_trainer(tmp_path, cfg, state=True, speed=SpeedParams()):
    torch.manual_seed(0)
    model = create_model("small_cnn")
    method = METHODS.get(cfg.method)(model, None, cfg.method_params(), cfg.attack)
    return Trainer(
        method,
        cfg,
        seed=1,
        device=torch.device("cpu"),
        speed=speed,
        state_path=tmp_path / "state.pt" if state else None,
    )


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path, mirror):
    data = load_split("cifar10", True, 96, data_dir=mirror)
    cfg = TrainParams(method="sat", epochs=2, batch_size=32, monitor_n=0, attack={"steps": 1})
    straight = make_trainer(tmp_path / "a", cfg)
    straight.fit(data)

    interrupted = make_trainer(tmp_path / "b", cfg)
    calls = {"n": 0}
    original = interrupted._epoch

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    interrupted._epoch = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(data)
    resumed = make_trainer(tmp_path / "b", cfg)
    history = resumed.fit(data)
    assert [h["epoch"] for h in history] == [1, 2]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_state_from_other_settings_is_not_resumed(tmp_path, mirror):
    data = load_split("cifar10", True, 32, data_dir=mirror)
    make_trainer(tmp_path, TrainParams(method="natural", epochs=1, batch_size=32, monitor_n=0)).fit(data)
    other = make_trainer(tmp_path, TrainParams(method="natural", epochs=1, batch_size=32, lr=0.05, monitor_n=0))
    assert other._load_state() == (0, [])


def test_non_finite_loss_stops_with_the_term_and_epoch(tmp_path, mirror):
    data = load_split("cifar10", True, 32, data_dir=mirror)
    trainer = make_trainer(tmp_path, TrainParams(method="natural", epochs=1, batch_size=32, monitor_n=0))
    trainer.method.loss = lambda batch, x_adv: {"ce": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(AcdistillError, match="loss term 'ce' is nan in epoch 1"):
        trainer.fit(data)
    assert not (tmp_path / "state.pt").exists()


def test_lr_schedules():
    cosine = TrainParams(method="natural", epochs=10)
    assert lr_factor(cosine, 0) == 1 and lr_factor(cosine, 5) == pytest.approx(0.5) and lr_factor(cosine, 10) < 1e-12
    step = TrainParams(method="natural", epochs=10, schedule="step", milestones=[5, 8], gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 4.9, 5, 8)] == pytest.approx([1, 1, 0.1, 0.01])


def test_amp_and_channels_last_train_on_cpu(tmp_path, mirror):
    data = load_split("cifar10", True, 64, data_dir=mirror)
    cfg = TrainParams(method="sat", epochs=1, batch_size=32, monitor_n=0, attack={"steps": 1})
    trainer = make_trainer(tmp_path, cfg, speed=SpeedParams(amp=True, channels_last=True))
    history = trainer.fit(data)
    assert torch.isfinite(torch.tensor(history[0]["loss/total"]))
    assert trainer.model.body[0].weight.is_contiguous(memory_format=torch.channels_last)
