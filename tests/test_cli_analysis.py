"""transfer-probe, ablate, figures and report through the CLI on the tiny profile, with their user errors."""

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run
from PIL import Image

from acdistill.config import Params
from acdistill.pipeline.common import details_path
from acdistill.pipeline.jobs import executor_for
from acdistill.provenance import code_info, machine_info, source_digest
from acdistill.stats import over_seeds, seeded_difference, unpack_bits


def details(metrics: Path) -> dict:
    """What a stage wrote beside its metrics file `metrics`: the rows, counts and settings."""
    return json.loads(details_path(metrics).read_text())


def digests(*dirs):
    """Every result file's hash (a finished run leaves no lock file)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def test_transfer_probe_writes_the_head_and_clean_and_pgd7_accuracy(here):
    out = run("transfer-probe").output
    assert "linear head on mnist (64 train images" in out
    probe = details(here / "metrics/probe.json")
    assert probe["dataset"] == "mnist" and probe["train_images"] == 64
    assert probe["natural"]["n"] == 32 and probe["pgd7"]["steps"] == 7
    assert probe["pgd7"]["accuracy"] <= probe["natural"]["accuracy"]
    accuracies = json.loads((here / "metrics/probe.json").read_text())
    assert accuracies == {a: {"accuracy": probe[a]["accuracy"], "ci95": probe[a]["ci95"]} for a in accuracies}
    assert list(accuracies) == ["natural", "pgd7", "all_attacks"]
    head = json.loads((here / "models/probe_head.json").read_text())
    assert head["feature_dim"] > 0 and head["num_classes"] == 10 and head["dataset"] == "mnist"
    assert (here / "models/probe_head.safetensors").is_file() and "| pgd7" in (here / "metrics/probe.md").read_text()


def test_ablate_runs_each_point_once_and_resumes_without_rerunning(here):
    first = run("ablate", "--runs", "ablate", "--out", "metrics/ablate.json").output
    assert first.count("running in") == 2
    result = details(here / "metrics/ablate.json")
    assert [p["distill.gacd.reweight"] for p in result["points"]] == [True, False]
    accuracies = json.loads((here / "metrics/ablate.json").read_text())  # what `dvc metrics` compares
    assert list(accuracies) == ["distill.gacd.reweight=True", "distill.gacd.reweight=False"]
    for point, row in zip(accuracies.values(), result["points"]):
        assert list(point) == ["natural", "pgd20", "all_attacks"]
        assert all(point[a]["accuracy"] == row[a] and point[a]["ci95"] == row[f"{a}_ci95"] for a in point)
    assert {"natural", "pgd20", "train_minutes"} <= set(result["points"][0])
    finished = digests(here / "ablate")
    # A wider grid: the two finished points are reused, only the new one runs.
    again = run("ablate", "--grid", "distill.gacd.reweight=true,false", "--grid", "distill.gacd.tau=0.1,0.2").output
    assert again.count("finished before, reused") == 2 and again.count("running in") == 2
    assert all(digests(here / "ablate")[p] == h for p, h in finished.items() if "dvclive" not in str(p))
    points = details(here / "metrics/ablate.json")["points"]
    assert [(p["distill.gacd.reweight"], p["distill.gacd.tau"]) for p in points] == [
        (True, 0.1),
        (True, 0.2),
        (False, 0.1),
        (False, 0.2),
    ]
    table = (here / "metrics/ablate.md").read_text()
    assert table.count("\n| ") == 5 and "distill.gacd.tau" in table  # header + 4 points


def test_an_interrupted_point_resumes_from_its_epoch_state(here):
    run("ablate", "--grid", "distill.epochs=2", "--out", "metrics/ablate_epochs.json")
    point = next(p for p in (here / "ablate").iterdir() if p.name.startswith("distill.epochs=2-"))
    (point / "result.json").unlink()  # as if killed after training, before the evaluation finished
    out = run("ablate", "--grid", "distill.epochs=2", "--out", "metrics/ablate_epochs.json").output
    assert "resuming after epoch 2 of 2" in out


def test_explicit_points_and_a_fine_tuned_point_that_starts_from_its_distilled_point(here):
    points = (
        "ablate.points=[{name: kd-aft, distill.method: kd, adv_finetune: true, aft.lr: 0.02}, "
        "{name: kd, distill.method: kd}]"
    )
    out = run("ablate", "-S", points, "-S", "ablate.grid={}", "--out", "metrics/ablate_points.json").output
    assert "first the distilled point distill.method=kd: running in" in out  # the fine-tuned point needs it first
    assert "ablate point 2/2 kd: finished before, reused" in out
    rows = details(here / "metrics/ablate_points.json")["points"]
    tuned, distilled = (Path(r["run"]) for r in rows)
    assert tuned.name.startswith("kd-aft-") and (here / "ablate/kd-aft").resolve() == tuned.resolve()
    assert (here / "ablate/kd").resolve() == distilled.resolve()  # the named point reused the unnamed run
    assert (tuned / "aft.json").is_file() and not (tuned / "distill.json").is_file()
    sidecar = json.loads((tuned / "student.json").read_text())
    assert sidecar["info"]["student_sha256"] == json.loads((distilled / "student.json").read_text())["sha256"]
    assert rows[0]["train_minutes"] >= rows[1]["train_minutes"]  # the fine-tuned student's cost includes distilling
    assert rows[0]["aft.lr"] == 0.02 and "aft.lr" not in rows[1]
    assert "| kd " in (here / "metrics/ablate_points.md").read_text()


def test_ablate_over_seeds_gives_each_accuracy_with_its_interval_and_flags_a_pair_within_noise(here):
    points = "ablate.points=[{name: kd, distill.method: kd}, {name: kd-tau2, distill.method: kd, distill.kd.tau: 2}]"
    kd = ["-S", points, "-S", "ablate.grid={}"]
    run("ablate", *kd, "--out", "metrics/ablate_kd.json")
    seed0 = Path(details(here / "metrics/ablate_kd.json")["points"][0]["run"])
    pair = ["-S", "ablate.compare=[[kd, kd-tau2]]"]
    out = run("ablate", *kd, *pair, "--seeds", "0,1,2", "--out", "seeds/ablate.json").output
    assert "ablate run 1/6 kd,seed=0: finished before, reused" in out and "ablate run 2/6 kd,seed=1: running in" in out
    result = details(here / "seeds/ablate.json")
    runs, point = result["runs"], result["points"][0]
    assert [r["seed"] for r in runs[:3]] == point["seeds"] == [0, 1, 2] and Path(runs[0]["run"]) == seed0
    students = [(Path(r["run"]) / "student.safetensors").read_bytes() for r in runs[:3]]
    assert len(set(students)) == 3  # the seed reached training
    evaluations = [json.loads(next(Path(r["run"]).glob("eval-*.json")).read_text())["eval"] for r in runs]
    for column in ("natural", "pgd20"):
        per_image = np.stack([unpack_bits(e[column]["correct"], e[column]["n"]) for e in evaluations[:3]])
        interval = over_seeds(per_image)
        assert point[column] == pytest.approx(100 * interval.estimate, abs=1e-3)
        assert point[column] == pytest.approx(statistics.fmean(r[column] for r in runs[:3]), abs=1e-3)
        assert point[f"{column}_ci95"] == interval.percent() and interval.low < interval.estimate < interval.high
    minutes = [r["train_minutes"] for r in runs[:3]]
    assert point["train_minutes_sd"] == pytest.approx(statistics.stdev(minutes), abs=1e-3)
    assert (here / "ablate/kd").resolve() == seed0.resolve()  # a named point links its first seed's run
    # kd against kd at another temperature, on 16 test images at three seeds: far within noise
    natural = next(c for c in result["comparisons"] if c["attack"] == "natural")
    expected = seeded_difference(
        np.stack([unpack_bits(e["natural"]["correct"], e["natural"]["n"]) for e in evaluations[:3]]),
        np.stack([unpack_bits(e["natural"]["correct"], e["natural"]["n"]) for e in evaluations[3:]]),
    )
    assert expected.within_noise and natural["ci95"] == expected.percent() and natural["verdict"] == "within noise"
    table = (here / "seeds/ablate.md").read_text()
    low, high = point["pgd20_ci95"]
    assert "3 students per point" in table and f"{point['pgd20']:.1f} ({low:.1f}–{high:.1f})" in table
    assert "## Comparisons" in table and "within noise" in table.split("## Comparisons")[1]
    run("report", "--metrics", "seeds", "--out", "seeds/report.md")
    page = (here / "seeds/report.md").read_text()
    assert "kd − kd-tau2" in page and "within noise" in page and "within noise of it:" in page
    # --only runs the named points alone (the grid's too are left out), reusing their runs
    only = run("ablate", *kd, "--only", "kd-tau2", "--grid", "distill.gacd.k=8,16", "--out", "seeds/only.json").output
    assert [p["name"] for p in details(here / "seeds/only.json")["points"]] == ["kd-tau2"]
    assert "running in" not in only and "finished before, reused" in only


def test_a_search_chooses_each_points_lr_on_held_out_training_images_and_its_run_is_the_first_seeds(here):
    points = (
        "ablate.points=[{name: kd, distill.method: kd}, {name: natural, distill.method: natural, search_by: natural}]"
    )
    search = "ablate.search={key: distill.lr, values: [0.002, 0.2], by: pgd20}"
    args = [
        "-S",
        points,
        "-S",
        "ablate.grid={}",
        "-S",
        search,
        "-S",
        "data.val_subset=64:96",
        "--runs",
        "ablate_search",
    ]
    out = run("ablate", *args, "--out", "search/ablate.json").output
    assert out.count("ablate search run") == 4 and "ablate point 1/2 kd: trained before, evaluating in" in out
    result = details(here / "search/ablate.json")
    for record, point in zip(result["search"], result["points"]):
        assert [t["value"] for t in record["values"]] == [0.002, 0.2]
        best = max(record["values"], key=lambda t: t["accuracy"])
        assert record["chosen"] == best["value"] == point["distill.lr"]
        assert record["by"] == ("natural" if point["name"] == "natural" else "pgd20")
        run_dir = Path(point["run"])
        held_out, test = (
            json.loads(p.read_text()) for p in sorted(run_dir.glob("eval-*.json"), key=lambda p: p.stat().st_mtime)
        )
        assert held_out["split"] == "val" and test["split"] == "test"  # one training, evaluated twice
        assert held_out["eval"][record["by"]]["accuracy"] == best["accuracy"] and held_out["eval"]["natural"]["n"] == 32
        images = torch.arange(64, 96).numpy().tobytes()
        assert held_out["eval"]["natural"]["images"] == hashlib.sha256(images).hexdigest()[:16]
    assert "## Search: distill.lr on the held-out training images" in (here / "search/ablate.md").read_text()
    again = run("ablate", *args, "--out", "search/ablate.json").output
    assert again.count("finished before, reused") == 6 and "running in" not in again


def test_finished_points_are_reused_from_their_small_results_alone_and_retrained_where_weights_are_needed(here):
    points = "ablate.points=[{name: kd, distill.method: kd}, {name: kd-aft, distill.method: kd, adv_finetune: true}]"
    args = ["-S", points, "-S", "ablate.grid={}", "--runs", "ablate_clone", "--out", "clone/ablate.json"]
    run("ablate", *args)
    first = details(here / "clone/ablate.json")["points"]
    trained = {
        p.parent.name: json.loads(p.read_text())["student_sha256"] for p in here.glob("ablate_clone/*/result.json")
    }
    for run_dir in (here / "ablate_clone").glob("*-*"):  # what a git clone of a study holds: the small files
        for path in list(run_dir.iterdir()):
            if path.name != "result.json" and not path.name.startswith("eval-"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    out = run("ablate", *args).output
    assert out.count("finished before, reused") == 2 and "running in" not in out
    assert details(here / "clone/ablate.json")["points"] == first
    # a new evaluation needs the student: it trains again, bit for bit the same on the same machine
    kept = {p: p.read_bytes() for p in here.glob("ablate_clone/*-*/*.json")}
    out = run("ablate", *args, "-S", "ablate.fixed={eval.n: 8}").output
    assert "ablate point 1/2 kd: running in" in out and "ablate point 2/2 kd-aft: running in" in out
    again = {
        p.parent.name: json.loads(p.read_text())["student_sha256"] for p in here.glob("ablate_clone/*/result.json")
    }
    assert again == trained
    # the same students again: their records and earlier evaluations stand, the new evaluation joins them
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert all(len(list(d.glob("eval-*.json"))) == 2 for d in here.glob("ablate_clone/*-*"))
    # a later stage reads the kd student: ablate.keep_weights trains it again where its weights are missing
    for path in (here / "ablate_clone").glob("kd-*/student.*"):
        path.unlink()
    out = run("ablate", *args, "-S", "ablate.keep_weights=[kd]").output
    assert "kd: running in" in out and (here / "ablate_clone/kd/student.safetensors").is_file()


def test_held_out_images_that_are_training_images_are_refused(here):
    before = digests(here / "metrics")
    result = run(
        "attack-eval",
        "--model",
        "models/student.safetensors",
        "-S",
        "data.val_subset=32:96",
        "-S",
        "eval.split=val",
        "--out",
        "metrics/eval_val.json",
        ok=False,
    )
    assert "data.val_subset 32:96 shares 32 images with data.train_subset 64 (first: 32)" in result.output
    result = run("distill", "-S", "data.val_subset=0:8", "--out", "models/v.safetensors", ok=False)
    assert "shares 8 images" in result.output
    result = run("attack-eval", "--model", "models/student.safetensors", "-S", "eval.split=val", ok=False)
    assert "eval.split 'val' needs data.val_subset" in result.output
    assert digests(here / "metrics") == before and not (here / "models/v.safetensors").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0,1,0"], "seeds must differ: 0, 1, 0"),
        (["--seeds", "3"], "one seed (3) gives no interval over seeds; without seeds each run's interval is over"),
        (["-S", "ablate.points=[{name: kd, distill.method: kd, seed: 4}]", "--seeds", "0,1"], "'seed' is set by"),
        (["-S", "ablate.compare=[[kd, nowhere]]", "-S", "ablate.points=[{name: kd, distill.method: kd}]"], "no point"),
    ],
)
def test_colliding_seeds_one_seed_and_an_unknown_pair_are_one_line_and_write_nothing(here, args, message):
    before = digests(here / "metrics", here / "ablate")
    result = run("ablate", "--out", "metrics/ablate_refused.json", *args, ok=False)
    assert message in result.output
    assert digests(here / "metrics", here / "ablate") == before


def test_a_run_reused_from_other_acdistill_code_is_named_in_the_output_and_the_table(here):
    run("ablate", "--out", "metrics/ablate.json")
    first, second = (Path(p["run"]) / "result.json" for p in details(here / "metrics/ablate.json")["points"])
    assert json.loads(first.read_text())["code"] == code_info()
    assert json.loads(first.read_text())["machine"] == machine_info()
    assert json.loads((first.parent / "student.json").read_text())["code"] == code_info()
    originals = first.read_text(), second.read_text()
    older = json.loads(originals[0]) | {"code": {"version": "0.0.9", "source": "x", "results": "0123456789ab"}}
    first.write_text(json.dumps(older))
    second.write_text(json.dumps({k: v for k, v in json.loads(originals[1]).items() if k != "code"}))
    try:
        out = run("ablate", "--out", "metrics/ablate_other_code.json").output
    finally:
        first.write_text(originals[0])
        second.write_text(originals[1])
    assert out.count("finished before, reused; trained by other acdistill code") == 2 and "running in" not in out
    now = source_digest(results_only=True)
    assert f"(source 0123456789ab, now {now})" in out and "(source unrecorded, now " in out
    result = details(here / "metrics/ablate_other_code.json")
    assert result["reused_from_other_code"] == ["distill.gacd.reweight=True", "distill.gacd.reweight=False"]
    assert (
        "reused: distill.gacd.reweight=True, distill.gacd.reweight=False."
        in (here / "metrics/ablate_other_code.md").read_text()
    )
    again = run("ablate", "--out", "metrics/ablate_other_code.json").output
    assert "other acdistill code" not in again
    assert details(here / "metrics/ablate_other_code.json")["reused_from_other_code"] == []


def test_ablate_sorted_by_a_column(here):
    run("ablate", "--sort-by", "natural", "--out", "metrics/ablate_sorted.json")
    points = details(here / "metrics/ablate_sorted.json")["points"]
    assert [p["natural"] for p in points] == sorted((p["natural"] for p in points), reverse=True)


def test_figures_are_written_with_readable_sizes(here):
    run("attack-eval", "--model", "models/teacher.safetensors", "--out", "metrics/eval_teacher.json")
    run("figures", "--student", "models/student.safetensors", "--student", "models/student_aft.safetensors")
    summary = json.loads((here / "figures/figures.json").read_text())
    assert set(summary["logit_corr_mean_abs_diff"]) == {"student", "student_aft"}
    assert set(summary["tsne_fooled_percent"]) == {"teacher", "student", "student_aft"}
    for name, min_width in (("logit_corr_student", 800), ("tsne", 1000), ("training_curves", 1000), ("eps_sweep", 500)):
        with Image.open(here / f"figures/{name}.png") as im:
            assert im.width >= min_width and im.height >= 300, name


def test_report_lists_every_run_with_its_teacher(here):
    run("report")
    page = (here / "report.md").read_text()
    for name in ("teacher", "student", "student_aft"):
        assert f"| {name} " in page
    student_row = next(line for line in page.splitlines() if line.startswith("| student "))
    assert "| gacd " in student_row and "| teacher " in student_row  # distilled from the teacher run
    aft_row = next(line for line in page.splitlines() if line.startswith("| student_aft "))
    assert "| student " in aft_row
    assert "## Ablation" in page and "## Linear probe" in page and "figures/tsne.png" in page


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["ablate", "--grid", "distill.gacd.kk=1,2"],
            "error: ablate point distill.gacd.kk=1: distill: gacd.kk: unknown key",
        ),
        (
            ["ablate", "--grid", "distill.gacd.k=many,2"],
            "error: ablate point distill.gacd.k=many: distill: gacd.k: Input should be a valid integer",
        ),
        (
            ["ablate", "--grid", "data.train_subset=64,missing.txt"],  # found before the first point trains
            "error: ablate point data.train_subset=missing.txt: subset index file not found: missing.txt",
        ),
        (["ablate", "--grid", "teacher.arch=resnet20,small_cnn"], "'teacher.arch': a grid point can change only"),
        (["ablate", "--grid", "distill.epochs=1", "--sort-by", "robustness"], "cannot sort by 'robustness'"),
        (["ablate", "-S", "ablate.points=[{teacher.epochs: 2}]"], "'teacher.epochs': a grid point can change only"),
        (["ablate", "-S", "ablate.points=[{adv_finetune: 1}]"], "'adv_finetune' takes true or false"),
        (["ablate", "-S", "ablate.grid={}"], "ablate: no points"),
        (["ablate", "-S", "ablate.points=[{name: a/b}]"], "point name 'a/b': use letters"),
        (["ablate", "-S", "ablate.points=[{name: a}, {name: a}]"], "point names must differ: a, a"),
        (["ablate", "--grid", "distill.gacd.k"], "is not KEY=VALUE"),
        (["ablate", "--seeds", "0,0"], "seeds must differ: 0, 0"),
        (["ablate", "--seeds", "0,one"], "ablate.seeds.1: Input should be a valid integer"),
        (["ablate", "--seeds", "0,1", "--grid", "seed=2,3"], "'seed' is set by ablate.seeds"),
        (
            ["transfer-probe", "--force", "--model", "models/none.safetensors"],
            "model file not found: models/none.safetensors",
        ),
        (["transfer-probe", "--head", "metrics/probe.json"], "the head is written as .safetensors"),
        (["transfer-probe", "--out", "metrics/probe.md"], "the results are written as .json"),
        (
            ["attack-eval", "--model", "models/student.safetensors", "--out", "metrics/e.md"],
            "the results are written as .json",
        ),
        (["figures", "-S", "figures.tsne_classes=[0,10]"], "cifar10 has 10 classes"),
        (["report", "--models", "nowhere"], "no runs: nowhere is not a directory"),
        (["distill", "--force", "--out", "/proc/acdistill/s.safetensors"], "cannot write to /proc/acdistill"),
        (["report", "--experiments", "--out", "metrics/exp.md"], "--experiments: "),  # not a DVC repository
    ],
)
def test_user_errors_name_the_problem_and_write_nothing(here, args, message):
    before = digests(here / "models", here / "metrics")
    result = run(*args, ok=False)
    assert message in result.output
    assert digests(here / "models", here / "metrics") == before


def test_a_target_dataset_with_no_offline_data_says_where_it_looked(here, tmp_path, monkeypatch):
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(tmp_path))
    before = digests(here / "metrics")
    result = run("transfer-probe", "--force", "--dataset", "svhn", "-S", f"probe.root={tmp_path / 'tv'}", ok=False)
    assert f"no svhn train data: offline mirror: {tmp_path} (the mirror has no svhn files)" in result.output
    assert digests(here / "metrics") == before


def test_two_jobs_run_the_points_at_once_with_the_sequential_results(here):
    """ablate --jobs 2: each point in its own process (submitit's local executor) with half the CPU cores; the
    sequential run takes as many threads, since a float sum's order, and so the last bits, depend on them."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    run("ablate", "--runs", "ablate_sequential", "--out", "metrics/ablate_sequential.json")
    out = run("ablate", "--jobs", "2", "--runs", "ablate_jobs", "--out", "metrics/ablate_jobs.json").output
    assert out.count("ran in ablate_jobs/") == 2 and "running in" in out
    sequential, jobs = (details(here / f"metrics/ablate_{k}.json") for k in ("sequential", "jobs"))
    for a, b in zip(sequential["points"], jobs["points"], strict=True):
        assert Path(a.pop("run")).parent.name == "ablate_sequential" and Path(b.pop("run")).parent.name == "ablate_jobs"
        a.pop("train_minutes"), b.pop("train_minutes")
        assert a == b
    assert {k: v for k, v in sequential.items() if k != "points"} == {k: v for k, v in jobs.items() if k != "points"}
    results = [json.loads(p.read_text()) for p in sorted((here / "ablate_jobs").glob("*/result.json"))]
    for run_dir in (here / "ablate_jobs").glob("*-*"):  # the same students, bit for bit
        twin = here / "ablate_sequential" / run_dir.name
        assert (
            json.loads((run_dir / "student.json").read_text())["sha256"]
            == json.loads((twin / "student.json").read_text())["sha256"]
        )
    (first_start, first_end), (second_start, second_end) = sorted(
        (datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"])) for r in results
    )
    assert second_start < first_end  # both ran at once
    assert not (here / "ablate_jobs" / ".submitit").exists()  # the jobs' logs are kept only when one fails
    again = run("ablate", "--jobs", "2", "--runs", "ablate_jobs", "--out", "metrics/ablate_jobs.json").output
    assert again.count("finished before, reused") == 2


def test_local_jobs_take_one_gpu_each_or_a_share_of_the_cores_and_share_when_more_jobs_than_devices(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    params = Params.model_validate({"ablate": {"jobs": 3}})
    executor, next_job = executor_for(params, tmp_path, torch.device("cuda"))
    assert "warning: ablate: 3 jobs on 2 GPUs; the jobs share them" in capsys.readouterr().err
    seen = []
    for slot in range(3):
        assert next_job(slot) == ("cuda", None)
        seen.append((executor.parameters["gpus_per_node"], executor.parameters["visible_gpus"]))
    assert seen == [(1, (0,)), (1, (1,)), (1, (0,))]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    executor, next_job = executor_for(params, tmp_path, torch.device("cpu"))
    assert "warning: ablate: 3 jobs on 2 CPU cores; the jobs share them" in capsys.readouterr().err
    assert next_job(0) == ("cpu", 1)


def fake_slurm(tmp_path: Path, monkeypatch, **tools: str) -> None:
    """Slurm's commands on the PATH as shell scripts: `srun` (which submitit looks for) failing, and `tools`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in {"srun": "exit 1", **tools}.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_slurm_jobs_take_the_slurm_section(monkeypatch, tmp_path):
    fake_slurm(tmp_path, monkeypatch)  # submitit looks for srun; nothing is submitted here
    slurm = {"partition": "gpu", "timeout_min": 90, "gpus_per_node": 1, "additional_parameters": {"account": "lab"}}
    params = Params.model_validate({"ablate": {"jobs": 4, "cluster": "slurm", "slurm": slurm}})
    executor, next_job = executor_for(params, tmp_path / "logs", torch.device("cpu"))
    assert next_job(0) == ("cuda", None)
    assert executor._executor.parameters == {
        "time": 90,
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "partition": "gpu",
        "additional_parameters": {"account": "lab"},
    }


def test_slurm_without_slurm_is_one_line_and_leaves_nothing(here, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    before = sorted(here.rglob("*"))
    out = run("ablate", "-S", "ablate.cluster=slurm", "--runs", "ablate_slurm", ok=False).output  # even one job
    assert "no Slurm (no srun on PATH)" in out
    assert sorted(here.rglob("*")) == before


def processes_of(folder: Path) -> list[str]:
    """The processes whose command line names `folder` (submitit's job controllers and jobs name their folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command:
            found.append(command)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the jobs' processes through /proc")
@pytest.mark.parametrize("stop", ["kill", "ctrl-c"])
def test_stopping_ablate_stops_its_jobs(here, stop):
    """`kill` (SIGTERM, here where Ctrl-C's SIGINT is ignored, as in a script's background job) and Ctrl-C (SIGINT to
    the terminal's whole foreground process group) stop the running points before ablate exits, with one line and
    no traceback; their epoch state stays for the next run."""
    runs = here / f"ablate_{stop}"
    command = [sys.executable, "-m", "acdistill", "ablate", "--jobs", "2", "--runs", str(runs), "--out"]
    command += [f"metrics/ablate_{stop}.json", "-S", "distill.epochs=500"]
    sigint = signal.SIG_IGN if stop == "kill" else signal.SIG_DFL
    with subprocess.Popen(
        command,
        cwd=here,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    ) as p:
        deadline = time.monotonic() + 120
        while len(list(runs.glob("*/state.pt"))) < 2 and time.monotonic() < deadline:  # both points have trained
            time.sleep(0.5)
        assert len(processes_of(runs / ".submitit")) >= 2
        if stop == "kill":
            p.send_signal(signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGINT)
        output = p.communicate(timeout=60)[0]
    assert p.returncode == 128 + (signal.SIGTERM if stop == "kill" else signal.SIGINT)
    assert "ablate: stopped; 2 running point(s) stopped too, to resume next time" in output
    assert "Traceback" not in output
    assert processes_of(runs / ".submitit") == []
    assert not (here / f"metrics/ablate_{stop}.json").exists() and not list(runs.glob("*/result.json"))


def test_a_point_that_fails_in_its_job_is_one_line_with_its_error(here, tmp_path):
    from typer.testing import CliRunner

    from acdistill.cli import app

    args = ["ablate", "--jobs", "2", "--runs", "ablate_failing", "--out", "metrics/ablate_failing.json"]
    # an lr that sends the loss to infinity: found only once the point trains, in its job
    result = CliRunner().invoke(app, [*args, "--grid", "distill.lr=1e30,0.05"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if not line.startswith("ablate: ")]  # the running lines
    assert len(error) == 1, result.output
    assert error[0].startswith("error: ablate point distill.lr=1e+30 failed in its job: distill: loss term ")
    assert "(its log: " in error[0] and not (here / "metrics/ablate_failing.json").exists()
    # an index past the dataset is found before any point runs
    bad = tmp_path / "indices.txt"
    bad.write_text("999999\n")
    result = CliRunner().invoke(app, [*args, "--runs", "ablate_never", "--grid", f"data.train_subset={bad},48"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "image 999999" in result.output
    assert not (here / "ablate_never").exists()


def test_a_job_that_slurm_refuses_is_one_line(here, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from acdistill.cli import app

    fake_slurm(tmp_path, monkeypatch, sbatch="echo 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1")
    args = ["ablate", "-S", "ablate.cluster=slurm", "--runs", "ablate_refused", "--out", "metrics/ablate_refused.json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    # sbatch's own stderr line comes first: submitit leaves it to the terminal
    assert result.output.splitlines()[-2:] == [
        "sbatch: error: invalid partition specified: gpu",
        "error: ablate point distill.gacd.reweight=True: its job could not be submitted: "
        "sbatch: error: invalid partition specified: gpu",
    ], result.output


def test_a_grid_key_the_method_does_not_read_warns_and_strict_refuses(here):
    args = ["-S", "distill.method=kd", "--grid", "distill.gacd.reweight=true,false", "--runs", "ablate_unread"]
    refused = run("ablate", *args, "--out", "metrics/ablate_unread.json", "--strict", ok=False).output
    assert "distill.gacd.reweight has no effect on kd (points distill.gacd.reweight=True, distill." in refused
    assert not (here / "ablate_unread").exists() and not (here / "metrics/ablate_unread.json").exists()
    out = run("ablate", *args, "--out", "metrics/ablate_unread.json").output
    assert "warning: ablate: distill.gacd.reweight has no effect on kd" in out
    assert out.count("running in") == 1 and out.count("finished before, reused") == 1  # one student, two labels
    named = [
        "-S",
        "ablate.grid={}",
        "-S",
        "ablate.points=[{name: tuned, aft.lr: 0.1}, {name: kd, distill.method: kd, distill.kd.tau: 2}]",
    ]
    refused = run("ablate", *named, "-S", "ablate.strict=true", ok=False).output
    assert "aft.lr has no effect without adv_finetune: true (points tuned)" in refused and "distill.kd" not in refused
