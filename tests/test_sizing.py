"""acdistill.pipeline.sizing: the arithmetic that sizes a run to its budget, and the timing runs' contract (whatever
seconds they measure, which no test asserts)."""

import pytest
import torch

from acdistill.config import AftParams, EvalParams, load_params
from acdistill.data import load_split
from acdistill.engine import Trainer
from acdistill.pipeline.common import build_method, new_model
from acdistill.pipeline.sizing import attack_passes, epoch_seconds, evaluation_seconds, most_epochs


@pytest.mark.parametrize(
    "available, aft, cap, epochs",
    [
        (100.0, AftParams(), 50, 3),  # 3 x 30 + 1 x 10: the fine-tuning of 3 epochs is 1 epoch
        (99.0, AftParams(), 50, 2),
        (100.0, AftParams(), 2, 2),  # the cap
        (35.0, AftParams(), 50, 0),  # one epoch and its fine-tuning take 40
        (35.0, None, 50, 1),  # no fine-tuning point
        (339.0, AftParams(), 50, 10),  # 10 and 11 epochs are fine-tuned for 1: 300 + 10 fits, 330 + 10 does not
        (342.0, AftParams(epochs=3), 50, 10),  # a fixed fine-tuning
    ],
)
def test_most_epochs_fits_the_epochs_and_their_fine_tuning(available, aft, cap, epochs):
    assert most_epochs(available, 30.0, 10.0, aft, cap) == epochs


def test_evaluation_bound_counts_every_attacks_passes_over_its_images():
    cfg = EvalParams(attacks=["natural", "pgd20", "aa-fast"], n=1000, n_per_attack={"aa-fast": 500}, batch_size=500)
    # 2 clean batches; PGD-20: 2 batches of 21 passes; aa-fast: 1 batch of 5 x 100 + 9 x 100 iterations, + 1
    assert evaluation_seconds(cfg, 1000, 0.5) == 0.5 * (2 + 2 * 21 + 1 * 1401)
    assert attack_passes("aa-fast", cfg.model_copy(update={"steps": 10}).budget()) == 14 * 10 + 1
    assert evaluation_seconds(cfg, 400, 1.0) == 1 + 21 + 1401  # 400 images, one batch of each


def test_a_timing_run_stops_its_epochs_after_max_steps_and_sees_the_whole_set(mirror):
    params = load_params(None, {"device": "cpu", "distill.method": "gacd", "distill.gacd.k": 16})
    cfg = params.distill.model_copy(update={"epochs": 2, "batch_size": 8, "monitor_n": 0})
    train = load_split("cifar10", True, 64, data_dir=mirror)
    method = build_method(cfg, new_model("small_cnn", params, 10), new_model("small_cnn", params, 10).eval())
    steps = []
    perturb = method.perturb
    method.perturb = lambda batch: steps.append(len(batch)) or perturb(batch)
    Trainer(method, cfg, seed=0, device=torch.device("cpu")).fit(train, max_steps=3)
    assert steps == [8] * 6 and method.bank.n == 64  # 2 epochs of 3 steps, and the bank of the whole set


def test_epoch_seconds_trains_a_copy_of_the_section_for_one_epoch_and_writes_nothing(mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(
        None, {"device": "cpu", "distill.method": "sat", "distill.epochs": 50, "distill.attack.steps": 1}
    )
    cfg = params.distill.model_copy(update={"batch_size": 8, "monitor_n": 4})
    train = load_split("cifar10", True, 200, data_dir=mirror)  # 25 batches, more than the longer timed run
    student = new_model("small_cnn", params, 10)
    before = [p.detach().clone() for p in student.parameters()]
    seconds = epoch_seconds(
        cfg,
        params,
        student=student,
        teacher=None,
        train=train,
        monitor=train.take(4),
        device=torch.device("cpu"),
        steps=(2, 4),
    )
    assert seconds > 0 and list(tmp_path.iterdir()) == []
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))  # it trained
