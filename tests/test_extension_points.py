"""A model, a checkpoint format and an evaluation attack, each added in one registration: defined here as a module of
acdistill would define them (a lab's MLP, the layout its training script saves, a random-noise attack), they work
through the CLI with no other file changed: a teacher of the new architecture trains, a file in the new layout loads
as the lab's own network, and attack-eval runs the new attack."""

import json
import shutil

import pytest
import torch
from conftest import MIRROR, REPO, run
from torch import nn

from acdistill import load_model
from acdistill.attacks import EVAL_ATTACKS, register_attack
from acdistill.formats import FORMATS, Format, register_format
from acdistill.models.registry import MODELS, register_model


def lab_network(num_classes: int = 10) -> nn.Sequential:
    """The lab's network as its own code builds it: encoder, ReLU, classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, num_classes))


def lab_mlp(num_classes: int) -> tuple[nn.Module, nn.Linear]:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU()), nn.Linear(32, num_classes)


LAB_KEYS = {"encoder.weight": "body.1.weight", "encoder.bias": "body.1.bias"}
LAB_KEYS |= {"classifier.weight": "linear.weight", "classifier.bias": "linear.bias"}


def lab_layout(state):
    return "lab_mlp", {}, {LAB_KEYS[k]: v for k, v in state.items()}


def uniform_noise(model, x, y, budget):
    """Uniform noise in the L-inf ball: a weak attack, but one that follows the contract."""
    return (x + budget.eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)


@pytest.fixture
def registered(monkeypatch):
    for registry in (MODELS, FORMATS, EVAL_ATTACKS):  # registered for this test alone
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    register_model("lab_mlp")(lab_mlp)
    register_format(
        Format(
            "lab-mlp",
            "the lab's MLP (encoder / classifier)",
            "the lab feeds [0, 1] inputs: none",
            lambda keys: keys == set(LAB_KEYS),
            lab_layout,
        )
    )
    register_attack("noise", "uniform noise in the eps ball", uniform_noise, norms=("Linf",))


def test_a_registered_model_format_and_attack_work_through_the_cli(registered, tmp_path, monkeypatch):
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    for command, name in (("models", "lab_mlp"), ("formats", "lab-mlp"), ("attacks", "noise")):
        assert name in run(command).output

    run("fetch-teacher", "--arch", "lab_mlp", "--out", "models/trained.safetensors")
    assert load_model(tmp_path / "models/trained.safetensors").arch == "lab_mlp"

    torch.manual_seed(0)
    network = lab_network().eval()
    state = dict(zip(LAB_KEYS, [p.detach() for p in (*network[1].parameters(), *network[3].parameters())]))
    torch.save(state, tmp_path / "lab.pt")
    run("fetch-teacher", "--source", "file", "--path", "lab.pt", "--normalize", "none")
    fetched = load_model(tmp_path / "models/teacher.safetensors").eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fetched(x), network(x), atol=1e-5)
    assert json.loads((tmp_path / "models/teacher.json").read_text())["info"]["format"] == "lab-mlp"

    out = tmp_path / "metrics/eval_teacher.json"
    run("attack-eval", "--model", "models/teacher.safetensors", "--attacks", "natural,noise", "--out", out)
    result = json.loads(out.read_text())
    assert {"natural", "noise"} <= set(result) and 0 <= result["noise"]["accuracy"] <= 100
    l2 = ["attack-eval", "--model", "models/teacher.safetensors", "--attacks", "noise", "-S", "eval.norm=L2"]
    assert "attack 'noise' is defined for Linf only, not L2" in run(*l2, "--out", "metrics/l2.json", ok=False).output
    assert not (tmp_path / "metrics/l2.json").exists()
