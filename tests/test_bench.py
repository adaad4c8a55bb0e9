import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO


def test_pgd_benchmark_smoke():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.pgd_eval",
            "--model",
            "small_cnn",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ours_images_per_s"] > 0 and result["torchattacks_images_per_s"] > 0


def test_whole_evaluation_benchmark_smoke(tmp_path):
    from conftest import MIRROR

    from acdistill import create_model, save_model

    save_model(create_model("small_cnn"), tmp_path / "m.safetensors", dataset="cifar10")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.pgd_eval",
            "--checkpoint",
            str(tmp_path / "m.safetensors"),
            "--n",
            "8",
            "--steps",
            "1",
            "--data-dir",
            str(MIRROR),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "whole evaluation" and result["images"] == 8
    assert 0 <= result["ours_accuracy"] <= 100 and result["ours_images_per_s"] > 0


def test_gacd_benchmark_smoke():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gacd_step",
            "--model",
            "small_cnn",
            "--batch-size",
            "8",
            "--bank-size",
            "200",
            "--repeats",
            "1",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["gacd_float16_bank_mb"] * 2 == pytest.approx(result["gacd_float32_bank_mb"], abs=0.1)
    assert result["rslad_step_s"] > 0 and result["sinkhorn_pot_s"] > 0 and result["sinkhorn_handwritten_s"] > 0


@pytest.mark.parametrize("method, has_reference", [("rslad", True), ("sat", True), ("gacd", False)])
def test_throughput_benchmark_smoke(method, has_reference):
    done = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--method", method, "--smoke", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["pipeline_img_s"] > 0 and result["bare_img_s"] > 0
    assert result["overhead"] == pytest.approx(result["bare_img_s"] / result["pipeline_img_s"], rel=0.01)
    assert (result["reference_img_s"] is not None) == has_reference and result["peak_rss_mb"] > 0
    assert result["gflop_per_image"] > 0 and result["device"] == "cpu" and result["matmul_ceiling_tflops"] == {}


def test_the_flop_count_matches_torchs_counter_and_survives_an_input_gradient():
    """bench.throughput counts FLOPs with torch's formulas but without FlopCounterMode's module hooks, which fail on
    autograd.grad with respect to an input (every attack step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from acdistill.models import create_model
    from bench.throughput import CountFlops

    model, x = create_model("resnet20"), torch.rand(4, 3, 32, 32)
    with FlopCounterMode(display=False) as theirs:
        model(x).sum().backward()
    with CountFlops() as ours:
        model(x).sum().backward()
    assert ours.total == theirs.get_total_flops() > 0
    x.requires_grad_(True)
    with CountFlops() as attack_step:
        torch.autograd.grad(model(x).sum(), x)
    # forward plus the input gradient: no weight gradients, so less than a training step's forward + backward
    assert ours.total / 3 < attack_step.total < ours.total
