"""Every command through Typer's CliRunner on the tiny profile, and every user error: one line, exit code 2,
nothing already written lost."""

import hashlib
import json
import shutil

import pytest
import torch
from conftest import run

from acdistill import create_model, load_model
from acdistill.checkpoint import read_sidecar
from acdistill.stats import unpack_bits, wilson
from acdistill.teachers import url as url_source


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stages_write_checkpoints_metrics_and_curves(here):
    for name in ("teacher", "student", "student_aft"):
        model = load_model(here / f"models/{name}.safetensors")
        assert model.arch == "small_cnn"
    assert json.loads((here / "models/student.json").read_text())["info"]["method"] == "gacd"
    # the metrics files hold the accuracies alone (what `dvc metrics diff` compares); the rest is in the details
    assert set(json.loads((here / "metrics/student.json").read_text())) == {"clean_acc", "pgd1_acc"}
    assert (here / "dvclive/student/plots/metrics/loss/nce.tsv").is_file()
    assert (here / "dvclive/student/plots/metrics/clean_acc.tsv").is_file()
    results = json.loads((here / "metrics/eval_student.json").read_text())
    details = json.loads((here / "metrics/eval_student_details.json").read_text())
    assert list(results) == list(details) == ["natural", "fgsm", "pgd20", "all_attacks"]
    for name, r in results.items():
        assert set(r) == {"accuracy", "ci95"} and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert details[name]["n"] == 32 and details[name]["worst_class"] <= r["accuracy"] == details[name]["accuracy"]
    assert "| attack" in (here / "metrics/eval_student.md").read_text()


def test_attack_eval_prints_a_table_and_takes_options(here):
    out = run(
        "attack-eval",
        "--model",
        "models/teacher.safetensors",
        "--attacks",
        "natural,fgsm",
        "--n",
        "8",
        "-S",
        "eval.sweep=null",
    ).output
    assert "natural" in out and "fgsm" in out and "pgd20" not in out and "against eps" not in out


def test_resume_skips_finished_epochs_and_keeps_the_curves(here):
    before = digest(here / "models/student.safetensors")
    for out in ("models/student.safetensors", "models/student.json", "metrics/student.json"):  # as DVC does
        (here / out).rename(here / f"{out}.bak")  # before rerunning a stage (the state file persists)
    shutil.rmtree(here / "dvclive/student")
    out = run("distill").output
    assert "resuming after epoch 1 of 1" in out
    assert digest(here / "models/student.safetensors") == before
    assert len((here / "dvclive/student/plots/metrics/clean_acc.tsv").read_text().splitlines()) == 2  # header + epoch


def test_runs_are_seeded(here):
    run("fetch-teacher", "--no-resume", "--out", "models/again.safetensors", "--metrics", "metrics/again.json")
    assert digest(here / "models/again.safetensors") == digest(here / "models/teacher.safetensors")


def test_distill_options_override_params(here):
    run(
        "distill",
        "--method",
        "kd",
        "--out",
        "models/kd.safetensors",
        "--metrics",
        "metrics/kd.json",
        "-S",
        "distill.kd.tau=2",
    )
    info = json.loads((here / "models/kd.json").read_text())["info"]
    assert info["method"] == "kd" and info["params"]["kd"]["tau"] == 2  # the validated section, defaults filled


def test_aft_lasts_a_tenth_of_the_students_distillation_unless_set(here):
    side = json.loads((here / "models/student.json").read_text())
    side["info"]["epochs"] = 25  # a student distilled for 25 epochs: 2 of AFT
    shutil.copy(here / "models/student.safetensors", here / "models/long.safetensors")
    (here / "models/long.json").write_text(json.dumps(side))
    unset = ["-S", "aft.epochs=null", "--no-resume", "--force"]  # the tiny profile sets aft.epochs: 1
    run(
        "adv-finetune",
        "--model",
        "models/long.safetensors",
        "--out",
        "models/long_aft.safetensors",
        "--metrics",
        "metrics/long_aft.json",
        *unset,
    )
    assert read_sidecar(here / "models/long_aft.safetensors")["info"]["epochs"] == 2
    run(
        "adv-finetune",
        "--model",
        "models/long.safetensors",
        "--out",
        "models/long_aft.safetensors",
        "--metrics",
        "metrics/long_aft.json",
        *unset,
        "--epochs",
        "1",
    )
    assert read_sidecar(here / "models/long_aft.safetensors")["info"]["epochs"] == 1
    result = run(
        "adv-finetune",
        "--model",
        "models/teacher.safetensors",
        "--out",
        "models/t_aft.safetensors",
        "--metrics",
        "metrics/t_aft.json",
        *unset,
        ok=False,
    )
    assert "aft.epochs is not set, and models/teacher.safetensors records no distillation epochs" in result.output


@pytest.mark.parametrize("distill_epochs, aft_epochs", [(1, 1), (8, 1), (19, 1), (25, 2), (240, 24)])
def test_aft_epochs_rule(distill_epochs, aft_epochs):
    from acdistill.config import AftParams

    assert AftParams().for_student(distill_epochs, "s").epochs == aft_epochs
    assert AftParams(epochs=3).for_student(distill_epochs, "s").epochs == 3


def test_fetch_teacher_from_a_third_party_pt(here):
    source = create_model("small_cnn")
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, here / "third_party.pt")
    run(
        "fetch-teacher",
        "--source",
        "file",
        "--path",
        "third_party.pt",
        "--out",
        "models/t2.safetensors",
        "--metrics",
        "metrics/t2.json",
    )
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(load_model(here / "models/t2.safetensors")(x), source.eval()(x))


def test_fetch_teacher_by_url_checks_sha256(here, monkeypatch, tmp_path):
    monkeypatch.setattr(url_source, "CACHE_DIR", tmp_path / "cache")
    weights = here / "models/teacher.safetensors"
    good = digest(weights)
    url = weights.as_uri()
    run(
        "fetch-teacher",
        "--source",
        "url",
        "--url",
        url,
        "--sha256",
        "0" * 64,
        "--out",
        "models/t3.safetensors",
        ok=False,
    )
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    assert not (here / "models/t3.safetensors").exists()
    # Our own safetensors carry the arch's buffers, so a URL teacher loads like a file one.
    run(
        "fetch-teacher",
        "--source",
        "url",
        "--url",
        url,
        "--sha256",
        good,
        "--arch",
        "small_cnn",
        "--out",
        "models/t3.safetensors",
        "--metrics",
        "metrics/t3.json",
    )
    assert (tmp_path / "cache" / good / "teacher.safetensors").is_file()


@pytest.mark.parametrize(
    "method, terms", [("crdnd", ["relation_nat", "relation_adv", "acm/adv_diag_0"]), ("iad", ["kl"]), ("ard", ["kl"])]
)
def test_tiny_run_of_each_new_method(here, method, terms):
    reweight = [] if method == "iad" else ["-S", f"distill.{method}.reweight=true"]
    run(
        "distill",
        "--method",
        method,
        *reweight,
        "--out",
        f"models/{method}.safetensors",
        "--metrics",
        f"metrics/{method}.json",
        "--no-resume",
    )
    assert read_sidecar(here / f"models/{method}.safetensors")["info"]["method"] == method
    assert set(json.loads((here / f"metrics/{method}.json").read_text())) == {"clean_acc", "pgd1_acc"}
    for term in terms:
        name = term if term.startswith("acm/") else f"loss/{term}"
        assert (here / f"dvclive/{method}/plots/metrics/{name}.tsv").is_file()


def test_listings():
    assert "resnet20" in run("models").output
    assert "rslad" in run("methods").output
    assert "pgd20" in run("attacks").output


@pytest.mark.parametrize(
    "args, message",
    [
        (["distill", "--method", "nope"], "unknown method 'nope'; choose from: "),
        (["distill", "--student", "nope"], "unknown model 'nope'; choose from:"),
        (
            ["distill", "-S", "distill.epohcs=2"],
            "-S distill.epohcs=2: distill: unknown key 'epohcs'; did you mean epochs?",
        ),
        (["distill", "-S", "data.dataset=imagenet"], "unknown dataset 'imagenet'"),
        (["distill", "--teacher", "models/missing.safetensors"], "model file not found"),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--attacks", "natural,nope"],
            "unknown attack 'nope'",
        ),
        (["attack-eval", "--model", "models/student.safetensors", "--n", "33"], "--n 33 is larger than the test set"),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--eps", "2"],
            "eval: an L-inf eps must be at most 1",
        ),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--norm", "L3"],
            "eval.norm: Input should be 'Linf' or 'L2'",
        ),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--norm", "L2", "--attacks", "cw-inf"],
            "attack 'cw-inf' is defined for Linf only, not L2",
        ),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--steps", "0"],
            "eval.steps: Input should be greater than or equal to 1",
        ),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--sweep", "0,x/255"],
            "eval.sweep.eps.1: expected a number",
        ),
        (["attack-eval", "--model", "models/student.safetensors", "--sweep", "0,2"], "an L-inf eps must be at most 1"),
        (["attack-eval", "--model", "models/student.safetensors", "--sanity", "--eps", "0"], "--sanity needs eps > 0"),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--eps", "-8/255"],
            "eval.eps: Input should be greater than or equal to 0",
        ),
        # --force gets past the refusal to overwrite the teacher; the error still comes before anything is written
        (["fetch-teacher", "--force", "--source", "file", "--path", "nothing.pt"], "model file not found: nothing.pt"),
        (
            [
                "fetch-teacher",
                "--force",
                "--source",
                "file",
                "--path",
                "models/teacher.safetensors",
                "--arch",
                "resnet20",
            ],
            "holds a small_cnn (its sidecar says), not a resnet20",
        ),
        (["distill", "--device", "cuda:7"], "not available on this machine"),
        (["distill", "--out", "models/student.pt"], "checkpoints are written as .safetensors"),
        (["distill", "--out", "models/x.safetensors", "--metrics", "models/x.json"], "would overwrite the checkpoint"),
        (
            ["fetch-teacher", "--out", "models/teacher.safetensors", "--metrics", "models/teacher.json"],
            "would overwrite the checkpoint or its sidecar",
        ),
    ],
)
def test_user_errors_are_one_line_and_lose_nothing(here, args, message):
    before = {p: digest(p) for p in (here / "models").glob("*.*")}
    result = run(*args, ok=False)
    assert message in result.output
    assert {p: digest(p) for p in (here / "models").glob("*.*")} == before


def test_corrupted_checkpoint_names_the_file(here):
    shutil.copy(here / "models/student.safetensors", here / "models/broken.safetensors")
    shutil.copy(here / "models/student.json", here / "models/broken.json")
    with open(here / "models/broken.safetensors", "r+b") as f:
        f.truncate(100)
    result = run("attack-eval", "--model", "models/broken.safetensors", ok=False)
    assert "models/broken.safetensors: sha256 does not match" in result.output


def test_missing_data_offline_says_where_it_looked(here, tmp_path, monkeypatch):
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(tmp_path))
    result = run("distill", "--force", "-S", f"data.root={tmp_path / 'tv'}", ok=False)
    assert str(tmp_path / "cifar10_lossless_subset.npz") in result.output and "torchvision download" in result.output


def test_bad_params_file(here, tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("eval:\n  attacks: [natural\n")
    assert (
        "invalid YAML" in run("attack-eval", "--model", "models/student.safetensors", "--params", bad, ok=False).output
    )


def test_a_teacher_of_another_dataset_or_class_count_is_refused_before_anything_is_written(here):
    from acdistill import save_model

    save_model(create_model("small_cnn", num_classes=100), here / "models/t100.safetensors", dataset="cifar100")
    save_model(create_model("small_cnn", num_classes=10), here / "models/tmnist.safetensors", dataset="mnist")
    before = {p: p.stat().st_mtime_ns for p in (here / "models").rglob("*")}
    out = ["--out", "models/refused.safetensors", "--metrics", "metrics/refused.json"]
    result = run("distill", "--teacher", "models/t100.safetensors", *out, ok=False)
    assert "teacher models/t100.safetensors has 100 classes (its sidecar says), but cifar10 has 10" in result.output
    result = run("distill", "--teacher", "models/tmnist.safetensors", "--method", "kd", *out, ok=False)
    assert "was trained on mnist (its sidecar says), but data.dataset is cifar10; set teacher.cross_dataset" in (
        result.output
    )
    for command in (["adv-finetune", "-S", "aft.method=ard", *out], ["ablate", "--runs", "ablate_refused"]):
        result = run(*command, "--teacher", "models/tmnist.safetensors", ok=False)
        assert "was trained on mnist" in result.output
    assert {p: p.stat().st_mtime_ns for p in (here / "models").rglob("*")} == before
    assert not (here / "metrics/refused.json").exists() and not (here / "ablate_refused").exists()
    # on purpose: a transfer setting
    run("distill", "--teacher", "models/tmnist.safetensors", "--method", "kd", *out, "-S", "teacher.cross_dataset=true")
    assert (here / "models/refused.safetensors").is_file()


def test_a_model_of_another_dataset_is_refused_by_every_stage_that_runs_it_unless_on_purpose(here):
    """A CIFAR-10 checkpoint evaluated on MNIST has the class count right and every number wrong."""
    from acdistill import save_model

    save_model(create_model("small_cnn", num_classes=10), here / "models/smnist.safetensors", dataset="mnist")
    before = {p: p.stat().st_mtime_ns for p in here.rglob("*") if p.is_file()}
    model = ["--model", "models/smnist.safetensors"]
    for command, override in [
        (["attack-eval", *model, "--out", "metrics/other_data.json"], "eval.cross_dataset"),
        (["figures", "--student", "models/smnist.safetensors", "--out-dir", "figures_refused"], "eval.cross_dataset"),
        (["adv-finetune", *model, "--out", "models/other_data.safetensors"], "teacher.cross_dataset"),
    ]:
        result = run(*command, ok=False)
        assert "models/smnist.safetensors was trained on mnist (its sidecar says), but data.dataset is cifar10; " in (
            result.output
        )
        assert f"set {override}: true to use it across datasets on purpose" in result.output
    assert {p: p.stat().st_mtime_ns for p in here.rglob("*") if p.is_file()} == before
    run(
        "attack-eval",
        *model,
        "--out",
        "metrics/transfer.json",
        "-S",
        "eval.cross_dataset=true",
        "-S",
        "eval.sweep=null",
    )
    assert (here / "metrics/transfer.json").is_file()


def test_attack_eval_gives_each_accuracy_with_its_wilson_interval_and_keeps_the_per_image_results(here):
    run(
        "attack-eval", "--model", "models/student.safetensors", "--out", "metrics/eval_ci.json", "-S", "eval.sweep=null"
    )
    results = json.loads((here / "metrics/eval_ci_details.json").read_text())
    per_image = json.loads((here / "metrics/eval_ci_per_image.json").read_text())
    table = (here / "metrics/eval_ci.md").read_text()
    for attack in ("natural", "fgsm", "pgd20", "all_attacks"):
        r, bits = results[attack], per_image[attack]
        assert "correct" not in r and bits["n"] == r["n"] == 32  # the details keep to the accuracies and counts
        correct = unpack_bits(bits["correct"], bits["n"])
        assert 100 * correct.mean() == pytest.approx(r["accuracy"], abs=0.01)
        assert r["ci95"] == wilson(int(correct.sum()), 32).percent()
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert f"{r['ci95'][0]:.1f}–{r['ci95'][1]:.1f}" in table
    assert per_image["natural"]["images"] == per_image["pgd20"]["images"]  # the same 32 test images
    # the robust images are among the clean ones
    robust, clean = (unpack_bits(per_image[a]["correct"], 32) for a in ("pgd20", "natural"))
    assert not (robust & ~clean).any()


def test_per_class_accuracies_add_up_to_the_total(here):
    from acdistill.data import load_split

    labels = load_split("cifar10", False, 32).labels
    results = json.loads((here / "metrics/eval_student_details.json").read_text())
    for r in results.values():
        counts = [(labels == c).sum().item() for c in range(10)]
        assert sum(a * n / 100 for a, n in zip(r["per_class"], counts) if a is not None) == pytest.approx(
            r["accuracy"] * 32 / 100, abs=0.05
        )
        assert all((a is None) == (n == 0) for a, n in zip(r["per_class"], counts))


def test_attack_eval_of_a_third_party_state_dict(here):
    ours = load_model(here / "models/student.safetensors")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in ours.state_dict().items() if "normalize" not in k}},
        here / "foreign.pt",
    )
    # without its normalize buffers, the state dict does not say what its inputs were: that must be stated
    assert (
        "do not record how their inputs were normalized"
        in run("attack-eval", "--model", "foreign.pt", "--arch", "small_cnn", ok=False).output
    )
    run(
        "attack-eval",
        "--model",
        "foreign.pt",
        "--arch",
        "small_cnn",
        "--normalize",
        "dataset",
        "--attacks",
        "natural,fgsm",
        "--out",
        "metrics/foreign.json",
    )
    foreign = json.loads((here / "metrics/foreign_details.json").read_text())
    assert foreign["natural"] == json.loads((here / "metrics/eval_student_details.json").read_text())["natural"] | {
        "seconds": foreign["natural"]["seconds"]
    }


def test_attack_eval_refuses_pickled_code(here):
    from test_checkpoint import Payload

    torch.save({"w": Payload(here / "ran")}, here / "evil.pt")
    result = run("attack-eval", "--model", "evil.pt", "--arch", "small_cnn", ok=False)
    assert "refused" in result.output and not (here / "ran").exists()


def test_attack_eval_warns_when_clean_accuracy_is_far_below_the_record(here):
    side = json.loads((here / "models/student.json").read_text())
    side["info"]["clean_acc"] = 100.0
    shutil.copy(here / "models/student.safetensors", here / "models/optimist.safetensors")
    (here / "models/optimist.json").write_text(json.dumps(side))
    out = run("attack-eval", "--model", "models/optimist.safetensors", "--attacks", "natural").output
    assert "warning: clean accuracy" in out and "wrong normalization" in out
    assert "warning" not in run("attack-eval", "--model", "models/student.safetensors", "--attacks", "natural").output


def test_attack_eval_sweep_and_sanity_outputs(here):
    out = run(
        "attack-eval",
        "--model",
        "models/student.safetensors",
        "--attacks",
        "natural,pgd20",
        "--steps",
        "3",
        "--sweep",
        "0,4/255,8/255",
        "--sanity",
        "-S",
        "eval.sanity.n=16",
        "-S",
        "eval.sanity.square_queries=20",
        "-S",
        "eval.sanity.steps=2",
        "--out",
        "metrics/sweep.json",
    ).output
    assert "gradient-masking checks" in out and "more_steps" in out and "against eps" in out
    assert "(Linf eps 8/255, 3 steps)" in out and "\n4/255 " in out and "0.01569" not in out  # as the field writes it
    results = json.loads((here / "metrics/sweep_details.json").read_text())
    assert results["pgd20"]["steps"] == 3
    assert set(results["sanity"]) == {"more_steps", "larger_eps", "whitebox_vs_square", "huge_eps"}
    assert all(isinstance(c["passed"], bool) for c in results["sanity"].values())
    curve = json.loads((here / "metrics/sweep_sweep.json").read_text())
    assert [r["eps"] for r in curve] == [0.0, round(4 / 255, 6), round(8 / 255, 6)]
    # eps 0 is clean accuracy, up to one image whose near-tied logits flip when it is re-run in a smaller batch
    assert curve[0]["accuracy"] == pytest.approx(results["natural"]["accuracy"], abs=100 / 32 + 0.01)
    assert (here / "metrics/sweep_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Gradient-masking checks" in (here / "metrics/sweep.md").read_text()


def test_attack_eval_l2(here):
    out = run(
        "attack-eval",
        "--model",
        "models/student.safetensors",
        "--attacks",
        "natural,fgsm,pgd20",
        "--norm",
        "L2",
        "--eps",
        "0.5",
    ).output
    assert "L2 eps 0.5" in out


def test_fetch_teacher_checks_its_input_before_its_outputs(here):
    before = digest(here / "models/teacher.safetensors")
    out = run("fetch-teacher", "--source", "file", "--path", "garbage.pt", ok=False).output
    assert "model file not found: garbage.pt" in out and "already holds" not in out
    assert digest(here / "models/teacher.safetensors") == before
