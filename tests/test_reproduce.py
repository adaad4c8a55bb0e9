"""acdistill reproduce on a synthetic paper table written into tmp_path (ACDISTILL_PAPERS_DIR): one block of two
rows (natural, kd) built on tests/tiny_params.yaml."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import MIRROR, REPO, run

from acdistill.pipeline.compare import Measured
from acdistill.pipeline.reproduce import claim_verdict

TINY = ["-S", "distill.epochs=1", "-S", "data.train_subset=48"]


def write_table(root: Path, table_id: str = "tiny-t", teacher: dict | None = None) -> Path:
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    params["ablate"] = {
        "points": [{"name": "natural", "distill.method": "natural"}, {"name": "kd", "distill.method": "kd"}],
        "fixed": {"eval.n": 16, "eval.attacks": ["natural", "pgd20"]},
        "compare": [["kd", "natural"]],
    }
    if teacher is not None:
        params["teacher"] = teacher
    folder = root / table_id
    folder.mkdir(parents=True)
    (folder / "b1.yaml").write_text(yaml.safe_dump(params))
    table = {
        "title": "Tiny table",
        "paper": "gacd",
        "source": "synthetic, Table 0",
        "budget": "tiny",
        "blocks": {"b1": "b1.yaml"},
        "cells": [
            {"block": "b1", "row": "natural", "attack": "natural", "paper": 50.0, "where": "T0, row 1"},
            {"block": "b1", "row": "kd", "attack": "pgd20", "paper": 10.0, "where": "T0, row 2"},
            {"block": "b1", "row": "kd", "attack": "aa", "paper": 5.0, "where": "T0, row 2", "measurable": False},
        ],
        "claims": [
            {"text": "kd beats natural", "block": "b1", "first": "kd", "second": "natural", "attack": "natural"}
        ],
        "notes": ["synthetic"],
    }
    (folder / "table.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    return folder


@pytest.fixture
def papers(tmp_path, monkeypatch):
    root = tmp_path / "papers"
    write_table(root)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("ACDISTILL_PAPERS_DIR", str(root))
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    return work


def test_list_and_dry_run_name_every_row_and_write_nothing(papers):
    listed = run("reproduce", "--list").output
    assert "tiny-t" in listed and "Tiny table" in listed
    line = next(x for x in listed.splitlines() if x.startswith("tiny-t"))
    assert line.split()[-3:] == ["1", "2", "3"]  # blocks, rows, cells
    out = run("reproduce", "tiny-t", "--dry-run", *TINY).output
    rows = [x.split() for x in out.splitlines() if x.startswith("b1 ")]
    assert [r[1] for r in rows] == ["(teacher)", "natural", "kd"]
    for r in rows:  # "GPU scaled, CPU measured [1]": which estimate is measured, and a footnote saying from what
        assert (
            r[-5] == "GPU" and r[-4] in ("measured,", "scaled,") and r[-3] == "CPU" and r[-2] in ("measured", "scaled")
        )
    assert "Budget: smaller than the paper's: distill.epochs=1, data.train_subset=48" in out
    assert "[1]" in out and "Nothing was run or written" in out
    assert list(papers.iterdir()) == []


def test_rows_of_dry_run(papers):
    out = run("reproduce", "tiny-t", "--dry-run", "--rows", "natural").output
    rows = [x.split()[1] for x in out.splitlines() if x.startswith("b1 ")]
    assert rows == ["natural"]  # natural needs no teacher: no teacher row


def test_a_table_runs_end_to_end_and_a_rerun_reuses_it(papers):
    first = run("reproduce", "tiny-t", *TINY).output
    assert "wrote reproduce/tiny-t.json and reproduce/tiny-t.md" in first
    report = json.loads((papers / "reproduce" / "tiny-t.json").read_text())
    assert report["budget"].startswith("Budget: smaller than the paper's: distill.epochs=1")
    natural, kd, aa = report["cells"]
    assert natural["paper"] == 50.0 and natural["status"] == "measured" and natural["n"] == 16
    low, high = natural["ci95"]
    assert low <= natural["measured"] <= high
    assert natural["delta"] == pytest.approx(natural["measured"] - 50.0, abs=0.01)
    assert kd["status"] == "measured" and kd["delta"] == pytest.approx(kd["measured"] - 10.0, abs=0.01)
    assert aa["status"] == "not run" and aa["measured"] is None
    (claim,) = report["claims"]
    assert claim["verdict"] in ("holds", "fails", "within noise") and "ci95" in claim
    md = (papers / "reproduce" / "tiny-t.md").read_text()
    assert "Budget: smaller than the paper's" in md and "not run" in md and claim["verdict"] in md
    assert f"{natural['measured']:.2f} ({low:.2f}–{high:.2f})" in md
    assert (papers / "reproduce" / "tiny-t" / "b1" / "teacher.safetensors").is_file()
    again = run("reproduce", "tiny-t", *TINY).output
    assert "teacher reused" in again
    assert again.count("finished before, reused") == 2
    assert json.loads((papers / "reproduce" / "tiny-t.json").read_text())["cells"] == report["cells"]


def measured(correct: list[bool]) -> Measured:
    return Measured((np.array(correct, dtype=bool),), "test:0-199")


def test_claim_verdicts_on_synthetic_per_image_results():
    n = 200
    good, bad = [True] * 150 + [False] * 50, [True] * 50 + [False] * 150
    assert claim_verdict(measured(good), measured(bad))[0] == "holds"
    assert claim_verdict(measured(bad), measured(good))[0] == "fails"
    verdict, diff = claim_verdict(measured(good), measured(good))
    assert verdict == "within noise" and diff["difference"] == 0
    assert claim_verdict(None, measured(good))[0] == "not run"
    assert len(good) == n


def test_bad_inputs_are_one_line_and_write_nothing(papers, tmp_path):
    out = run("reproduce", "nope", ok=False).output
    assert "unknown table 'nope'" in out and "tiny-t" in out
    out = run("reproduce", "tiny-t", "--rows", "kd,zz", ok=False).output
    assert "unknown row 'zz'" in out and "natural, kd" in out
    release = Path("models/robustbench/cifar10/Linf/Carmon2019Unlabeled.pt")
    write_table(tmp_path / "papers", "file-t", teacher={"source": "file", "path": str(release), "arch": "small_cnn"})
    out = run("reproduce", "file-t", *TINY, ok=False).output
    assert str(release) in out and "Carmon2019Unlabeled" in out
    assert not (papers / "reproduce").exists() and list(papers.iterdir()) == []
