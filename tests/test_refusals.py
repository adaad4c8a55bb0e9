"""A refused command leaves nothing behind and says the right thing: it validates its params and output paths before
it creates any directory or lock file, names the params file only when there is one, and its --help and shell
completion show the valid choices, taken from the registries."""

import pytest
from conftest import run
from typer.testing import CliRunner

from acdistill.attacks import EVAL_ATTACKS
from acdistill.cli import app
from acdistill.methods import METHODS
from acdistill.models import list_models

MODEL = ["--model", "models/student.safetensors"]
GRID = ["--grid", "distill.epochs=1"]

REFUSED = [
    (
        ["distill", "-S", "distill.attack.eps=8"],
        "error: -S distill.attack.eps=8: distill.attack.eps: 8 is above 1, but pixel values are in [0, 1] units: "
        "did you mean 8/255?",
    ),
    (["distill", "--method", "nope"], "error: --method nope: distill: unknown method 'nope'; choose from: "),
    (["distill", "--method", "rsald"], "unknown method 'rsald'; did you mean rslad? choose from"),
    (["distill", "-S", "distil.method=kd"], "-S distil.method=kd: distil: unknown key; did you mean distill.method?"),
    (["distill", "-S", "distill.eps=0.03"], "unknown key 'eps'; did you mean epochs or attack.eps?"),
    (["distill", "-S", "distill.attack.esp=1"], "distill.attack.esp: unknown key; did you mean distill.attack.eps?"),
    (["distill", "-S", "distill.gacd.kk=1"], "distill: gacd.kk: unknown key; did you mean k?"),
    (["distill", "-S", "probe.zzz=1"], "probe.zzz: unknown key\n"),  # nothing close: no guess
    (["distill", "--student", "resnet2"], "--student resnet2: distill.student: unknown model 'resnet2'; did you mean"),
    (
        ["attack-eval", *MODEL, "--attacks", "pgd2O"],
        "--attacks pgd2O: eval: unknown attack 'pgd2O'; did you mean pgd20",
    ),
    (["attack-eval", *MODEL, "--eps", "8"], "--eps 8: eval: an L-inf eps must be at most 1: 8 is above 1"),
    (
        ["fetch-teacher", "--format", "trades-wnr"],
        "--format trades-wnr: teacher: unknown format 'trades-wnr'; did you mean",
    ),
    (["ablate", "--grid", "distill.method=kd,rsald"], "ablate point distill.method=rsald: distill: unknown method"),
    (["distill", "--method", "natural", "-S", "data.test_subset=20000"], "asks for cifar10 test image 19999"),
    (["distill", "--method", "natural", "-S", "data.train_subset=5:3"], "range 5:3 takes the images A to B - 1"),
    (["distill", "--method", "natural", "-S", "data.val_subset=0:8"], "shares 8 images with data.train_subset"),
    (["attack-eval", "--model", "m.safetensors", "--attacks", ""], "eval.attacks: List should have at least 1"),
    (
        ["distill", "--method", "natural", "--out", "models/student.pt"],
        "checkpoints are written as .safetensors",
    ),
    (
        ["distill", "--out", "student.pt"],
        "--out student.pt: checkpoints are written as .safetensors",
    ),  # before the teacher
    (
        ["adv-finetune", "--out", "aft.pt"],
        "--out aft.pt: checkpoints are written as .safetensors",
    ),  # before the student
    (["distill", "--teacher", "models/none.safetensors"], "model file not found"),
    (["distill", "--device", "cuda:7"], "not available on this machine"),
    (
        ["fetch-teacher", "-S", "teacher.train.epochs=0"],
        "teacher.train.epochs: Input should be greater",
    ),
    (
        ["fetch-teacher", "--source", "file", "--path", "none.pt"],
        "model file not found: none.pt",
    ),
    (["adv-finetune", "-S", "aft.lr=0"], "aft.lr: Input should be greater than 0"),
    (["adv-finetune"], "model file not found"),
    (
        ["attack-eval", *MODEL, "-S", "eval.eps=2"],
        "eval: an L-inf eps must be at most 1",
    ),
    (
        ["attack-eval", *MODEL, "--out", "metrics/eval.md"],
        "the results are written as .json",
    ),
    (["attack-eval", *MODEL, "--out", "metrics/eval.json"], "model file not found"),
    (
        ["transfer-probe", "-S", "probe.epochs=0"],
        "probe.epochs: Input should be greater than or equal to 1",
    ),
    (
        ["transfer-probe", "--head", "models/head.pt"],
        "the head is written as .safetensors",
    ),
    (["transfer-probe"], "model file not found"),
    (["ablate", "-S", "ablate.seeds=[0, 0]"], "seeds must differ: 0, 0"),
    (
        ["ablate", *GRID, "--out", "metrics/ablate.md"],
        "the results are written as .json",
    ),
    (["ablate", *GRID], "model file not found: models/teacher.safetensors; get a teacher first"),
    (
        ["figures", "-S", "figures.n=1"],
        "figures.n: Input should be greater than or equal to 2",
    ),
    (["figures"], "model file not found"),
    (["report", "--out", "report.txt"], "the report is a markdown (.md) file"),
    (["report"], "no runs: models is not a directory"),
]


@pytest.mark.parametrize("args, message", REFUSED, ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_a_refused_command_in_an_empty_directory_creates_nothing(tmp_path, monkeypatch, args, message):
    """No params file here: the message names no params.yaml, and no directory or lock file appears."""
    monkeypatch.chdir(tmp_path)
    output = run(*args, ok=False).output
    assert message in output
    assert "params.yaml" not in output
    assert sorted(tmp_path.rglob("*")) == []


def test_an_error_names_the_params_file_when_there_is_one_and_the_option_a_value_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\ndistill: {attack: {eps: 8}}\n")
    output = run("distill", ok=False).output
    assert output.startswith("error: params.yaml: distill.attack.eps: 8 is above 1")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    output = run("distill", "-S", "distill.attack.eps=8", ok=False).output
    assert output.startswith("error: -S distill.attack.eps=8: distill.attack.eps: ")
    output = run("distill", "-S", "distill.method=gacd", "--method", "foo", ok=False).output
    assert output.startswith("error: --method foo: distill: unknown method 'foo'")  # the option overrides the -S
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "params.yaml"]


def help_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_names_the_valid_choices_from_the_registries():
    distill, attack_eval = help_of("distill"), help_of("attack-eval")
    assert all(name in distill for name in METHODS.names() + list_models())
    assert all(name in attack_eval for name in EVAL_ATTACKS.names() + list_models())


def completions(*words: str) -> list[str]:
    """What bash completion offers after `acdistill WORDS` (the last word being completed)."""
    env = {
        "_ACDISTILL_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(["acdistill", *words]),
        "COMP_CWORD": str(len(words)),
    }
    result = CliRunner().invoke(app, [], env=env, prog_name="acdistill")
    return result.output.split()


def test_shell_completion_offers_the_registries_names():
    assert completions("distill", "--method", "") == METHODS.names()
    assert completions("distill", "--method", "r") == ["rslad"]
    assert completions("distill", "--student", "resnet") == [m for m in list_models() if m.startswith("resnet")]
    assert completions("attack-eval", "--attacks", "natural,pgd") == [
        f"natural,{name}" for name in EVAL_ATTACKS.names() if name.startswith("pgd")
    ]
