import os
import shutil
from pathlib import Path

import pytest
import torch

from acdistill.data import load_split

# The toy student, teacher and batch of the method tests, as the fixture `toy`.
pytest_plugins = ["toy_methods"]

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("ACDISTILL_DATA_DIR", REPO.parent / "shared" / "data"))


def run(*args, ok=True):
    """A command through Typer's CliRunner; with ok=False it must fail as a user error: one line, exit code 2."""
    from typer.testing import CliRunner

    from acdistill.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory per test module where the tiny pipeline's training stages ran once through the CLI, plus the
    student's evaluation."""
    d = tmp_path_factory.mktemp("tiny")
    shutil.copy(REPO / "tests" / "tiny_params.yaml", d / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
        run("fetch-teacher")
        run("distill")
        run("adv-finetune")
        run("attack-eval", "--model", "models/student.safetensors", "--out", "metrics/eval_student.json")
    return d


@pytest.fixture
def here(workdir, monkeypatch):
    """The module's tiny workdir as the current directory, with the offline mirror."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    return workdir


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "cifar10_lossless_subset.npz").is_file():
        pytest.fail(f"offline data mirror not found at {MIRROR}; set ACDISTILL_DATA_DIR")
    return MIRROR


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mnist_model(mirror):
    """A small CNN trained naturally on 6000 MNIST images for one epoch (a few seconds): a real trained model
    with robust accuracy well between 0 and 100 % at eps 0.1, for cross-checking attacks."""
    from acdistill.config import TrainParams
    from acdistill.data import DATASETS
    from acdistill.engine import Trainer
    from acdistill.methods.natural import Natural
    from acdistill.models import create_model

    torch.manual_seed(0)
    train = load_split("mnist", True, 6000, data_dir=mirror)
    mnist = DATASETS.get("mnist")
    model = create_model("small_cnn", num_classes=10, mean=mnist.mean, std=mnist.std)
    cfg = TrainParams(method="natural", epochs=2, batch_size=64, lr=0.05, monitor_n=0)
    Trainer(Natural(model, None, cfg.method_params(), cfg.attack), cfg, seed=0, device=torch.device("cpu")).fit(
        train, None, augment=False
    )
    return model.eval()


@pytest.fixture(scope="session")
def mnist_test(mirror):
    return load_split("mnist", False, 1000, data_dir=mirror)
