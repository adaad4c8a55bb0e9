"""`dvc repro` of the real dvc.yaml on the tiny profile, in a fresh git + DVC repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MIRROR, REPO


def sh(cwd: Path, *cmd: str) -> str:
    env = {
        **os.environ,
        "ACDISTILL_DATA_DIR": str(MIRROR),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def flatten(data: dict, prefix: str = "") -> dict:
    """DVC's view of a metrics file: nested keys joined by dots, lists left out."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[f"{prefix}{key}"] = value
    return flat


def set_param(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copy(REPO / ".dvcignore", repo)
    shutil.copytree(REPO / "subsets", repo / "subsets")
    shutil.copy(REPO / "tests" / "tiny_params.yaml", repo / "params.yaml")
    shutil.copytree(REPO / "acdistill", repo / "acdistill", ignore=shutil.ignore_patterns("__pycache__"))
    # the study as a clone has it: its own DVC project, with its metrics and the figure data of its plots
    study = repo / "study"
    for path in (".dvc/config", ".dvc/.gitignore", ".dvcignore", "dvc.yaml", "dvc.lock", "metrics", "figures"):
        copy = shutil.copytree if (REPO / "study" / path).is_dir() else shutil.copy
        (study / path).parent.mkdir(parents=True, exist_ok=True)
        copy(REPO / "study" / path, study / path)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "test@example.com")
    sh(repo, "git", "config", "user.name", "test")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")  # dvclive and `dvc exp` need a commit, as in any clone
    return repo


def test_repro_runs_everything_then_nothing_then_only_what_changed(repo):
    first = sh(repo, "dvc", "repro")
    for stage in (
        "fetch-teacher",
        "distill",
        "adv-finetune",
        "attack-eval@teacher",
        "attack-eval@student",
        "attack-eval@student_aft",
        "transfer-probe",
        "ablate",
        "figures",
        "report",
    ):
        assert f"Running stage '{stage}'" in first
    for name in ("teacher", "student", "student_aft"):
        assert json.loads((repo / f"metrics/eval_{name}_details.json").read_text())["pgd20"]["n"] == 32
        assert [r["eps"] for r in json.loads((repo / f"metrics/eval_{name}_sweep.json").read_text())] == [
            0.0,
            round(8 / 255, 6),
        ]
    assert json.loads((repo / "models/student.json").read_text())["info"]["method"] == "gacd"  # the default method
    shown = sh(repo, "dvc", "plots", "show", "-o", "plots_html")
    assert "failed" not in shown.lower() and "study" not in shown
    page = (repo / "plots_html" / "index.html").read_text()
    assert "robust accuracy against eps" in page and "eval_student_aft_sweep.json" in page
    for png in ("tsne", "logit_corr_student", "logit_corr_student_aft", "training_curves", "eps_sweep"):
        assert f"figures/{png}.png" in page
    report = (repo / "report.md").read_text()
    assert all(f"| {name} " in report for name in ("teacher", "student", "student_aft"))
    assert json.loads((repo / "metrics/probe_details.json").read_text())["pgd7"]["n"] == 32
    # `dvc metrics show`: the accuracies a run is compared by, none of the study's, no counts or timings
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    files = metrics[0]["data"] if isinstance(metrics, list) else metrics[""]["data"]
    assert sorted(files) == sorted(
        f"metrics/{name}.json"
        for name in ("teacher", "student", "student_aft", "eval_teacher", "eval_student", "eval_student_aft")
        + ("probe", "ablate")
    )
    columns = {k for f in files.values() for k in flatten(f["data"])}
    assert not {c for c in columns if c.rsplit(".", 1)[-1] in ("n", "seconds", "steps", "worst_class", "source")}
    assert len(columns) <= 25, sorted(columns)
    # the report is this workspace's alone: one teacher row
    sh(repo, "acdistill", "report", "--out", "r.md")
    assert [line for line in (repo / "r.md").read_text().splitlines() if line.startswith("| teacher ")] != []
    assert len([line for line in (repo / "r.md").read_text().splitlines() if line.startswith("| teacher ")]) == 1
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")  # the baseline README tells a user to commit

    assert "Running stage" not in sh(repo, "dvc", "repro")

    set_param(repo, "ablate", "grid", {"distill.gacd.reweight": [True, False], "distill.gacd.tau": [0.1, 0.2]})
    widened = sh(repo, "dvc", "repro")
    assert "Running stage 'ablate'" in widened and "Running stage 'distill'" not in widened
    assert widened.count("finished before, reused") == 2 and widened.count("running in") == 2
    sh(repo, "git", "checkout", "--", "params.yaml")

    set_param(repo, "distill", "method", "ard")
    second = sh(repo, "dvc", "repro")
    assert "Running stage 'distill'" in second and "Running stage 'adv-finetune'" in second
    assert "Running stage 'fetch-teacher'" not in second and "Running stage 'attack-eval@teacher'" not in second
    assert json.loads((repo / "models/student.json").read_text())["info"]["method"] == "ard"
    diff = sh(repo, "dvc", "metrics", "diff")
    assert "metrics/student.json" in diff and "metrics/eval_student.json" in diff and "failed" not in diff.lower()
    assert "study" not in diff and "seconds" not in diff

    sh(repo, "git", "checkout", "--", "params.yaml")
    sh(repo, "dvc", "checkout", "-q")
    sh(repo, "dvc", "exp", "run", "-S", "distill.method=kd")
    shown = sh(repo, "dvc", "exp", "show", "--no-pager", "--md")
    assert "kd" in shown
    sh(repo, "acdistill", "report", "--experiments", "--out", "all.md")
    experiments = (repo / "all.md").read_text().split("## Commits and experiments")[1]
    rows = [line.split("|")[1:4] for line in experiments.splitlines() if line.startswith("| ")][1:]
    methods = {(exp.strip(), method.strip()) for exp, model, method in rows if model.strip() == "student"}
    branch = sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD").strip()
    assert ("workspace", "kd") in methods and (branch, "gacd") in methods and len(methods) == 3  # + the experiment
    kd_row = next(line for line in experiments.splitlines() if "| distill.method=kd " in line)
    assert re.search(r"\| \d+\.\d \(\d+\.\d–\d+\.\d\) ", kd_row), (
        kd_row
    )  # the interval, read from the experiment's file
    teachers = [exp.strip() for exp, model, _ in rows if model.strip() == "teacher"]
    assert len(teachers) == len(set(teachers)) == 3  # one teacher row per experiment: the study's are not collected
