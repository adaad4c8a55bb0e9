"""`dvc repro` of the real dvc.yaml on the tiny profile, in a fresh git + DVC repository."""

import json
import os
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


def set_param(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copy(REPO / ".dvcignore", repo)
    shutil.copy(REPO / "tests" / "tiny_params.yaml", repo / "params.yaml")
    shutil.copytree(REPO / "acdistill", repo / "acdistill", ignore=shutil.ignore_patterns("__pycache__"))
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
        assert json.loads((repo / f"metrics/eval_{name}.json").read_text())["pgd20"]["n"] == 32
        assert [r["eps"] for r in json.loads((repo / f"metrics/eval_{name}_sweep.json").read_text())] == [
            0.0,
            round(8 / 255, 6),
        ]
    assert json.loads((repo / "metrics/distill.json").read_text())["method"] == "gacd"  # the default method
    sh(repo, "dvc", "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "robust accuracy against eps" in page and "eval_student_aft_sweep.json" in page
    for png in ("tsne", "logit_corr_student", "logit_corr_student_aft", "training_curves", "eps_sweep"):
        assert f"figures/{png}.png" in page
    report = (repo / "report.md").read_text()
    assert all(f"| {name} " in report for name in ("teacher", "student", "student_aft"))
    assert json.loads((repo / "metrics/probe.json").read_text())["pgd7"]["n"] == 32
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")

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
    assert json.loads((repo / "metrics/distill.json").read_text())["method"] == "ard"
    diff = sh(repo, "dvc", "metrics", "diff")
    assert "metrics/distill.json" in diff

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
