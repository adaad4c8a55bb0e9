"""One re-run policy (docs/pipeline.md): a stage of either pipeline depends on the code that computes its result and
on no other, so that an edit to evaluation, reporting or the docs never retrains the teacher or the students."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PIPELINES = {REPO / "dvc.yaml": "", REPO / "study" / "dvc.yaml": "../"}
TRAINING = {"fetch-teacher", "distill", "adv-finetune", "teacher"}  # the study names its fetch-teacher stage teacher
# Code that evaluates, reports or documents: never a dependency of a training stage.
NOT_TRAINING = [
    "acdistill/pipeline/evaluation.py",
    "acdistill/pipeline/report.py",
    "acdistill/pipeline/figures.py",
    "acdistill/pipeline/probe.py",
    "acdistill/pipeline/ablate.py",
    "acdistill/pipeline/points.py",
    "acdistill/pipeline/runs.py",
    "acdistill/pipeline/reproduce.py",
    "acdistill/pipeline/costs.py",
    "acdistill/pipeline/sizing.py",
    "acdistill/papers.py",
    "acdistill/engine/sanity.py",
    "acdistill/engine/probe.py",
    "acdistill/attacks/suite.py",
    "acdistill/plots.py",
    "acdistill/analysis.py",
    "acdistill/cli",
    "docs",
    "README.md",
]
# Imported by the training stages without deciding what they compute: file handling, errors, registries, logging of
# provenance and the version it records, the progress display, the device choice, the writing of the per-epoch
# curves, the evaluation that only monitors them, its intervals, ablate's tables and its jobs.
NOT_A_RESULT = {
    "acdistill/__init__.py",
    "acdistill/io.py",
    "acdistill/errors.py",
    "acdistill/registry.py",
    "acdistill/provenance.py",
    "acdistill/_version.py",
    "acdistill/progress.py",
    "acdistill/engine/__init__.py",
    "acdistill/engine/device.py",
    "acdistill/engine/curves.py",
    "acdistill/engine/evaluate.py",
    "acdistill/attacks/__init__.py",
    "acdistill/attacks/suite.py",
    "acdistill/untouched.py",
    "acdistill/pipeline/__init__.py",
    "acdistill/pipeline/compare.py",
    "acdistill/pipeline/jobs.py",
    "acdistill/stats.py",
    *NOT_TRAINING,
}


def code_deps() -> list[tuple[str, str, list[str]]]:
    """(pipeline, stage, code dependencies relative to the repository) for every stage of both pipelines."""
    out = []
    for path, prefix in PIPELINES.items():
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            deps = (stage.get("do", stage)).get("deps", [])
            code = [d.removeprefix(prefix) for d in deps if d.removeprefix(prefix).startswith("acdistill")]
            out.append(("main" if path.parent == REPO else "study", name, code))
    return out


@pytest.mark.parametrize("pipeline, stage, code", code_deps(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_stage_names_the_code_it_runs_and_it_exists(pipeline, stage, code):
    assert code, f"{stage} declares no code"
    assert "acdistill" not in code, f"{stage} depends on the whole package: any edit would rerun it"
    assert all((REPO / d).exists() for d in code), [d for d in code if not (REPO / d).exists()]


@pytest.mark.parametrize(
    "pipeline, stage, code", [d for d in code_deps() if d[1] in TRAINING], ids=lambda x: x if isinstance(x, str) else ""
)
def test_training_stages_depend_on_no_evaluation_reporting_or_docs(pipeline, stage, code):
    assert not [d for d in code if any(d == n or d.startswith(n + "/") for n in NOT_TRAINING)]


def test_every_module_the_training_stages_import_is_a_dependency_or_decides_nothing():
    """A module added to the training code path must be listed in dvc.yaml, or named here as deciding nothing."""
    imported = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; import acdistill.pipeline.training; "
                "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('acdistill') and "
                "getattr(m, '__file__', None))))",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
    )
    files = {str(Path(f).resolve().relative_to(REPO)) for f in imported}
    deps = next(code for pipeline, stage, code in code_deps() if (pipeline, stage) == ("main", "fetch-teacher"))
    covered = {f for f in files if any(f == d or f.startswith(d + "/") for d in deps)}
    assert files - covered - NOT_A_RESULT == set()
