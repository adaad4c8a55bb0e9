"""The report's table of commits and experiments, from `dvc exp show --json` as DVC 3 writes it."""

import json

from acdistill.pipeline.report import experiment_rows, experiments_table


def exp_show(workspace_method: str) -> list[dict]:
    def data(method: str, pgd20: float, eps: str = "8/255") -> dict:
        return {
            "params": {"params.yaml": {"data": {"distill": {"method": method, "attack": {"eps": eps}}}}},
            # DVC leaves lists out: the intervals are not here
            "metrics": {"metrics/eval_student.json": {"data": {"pgd20": {"accuracy": pgd20}}}},
        }

    return [
        {"rev": "workspace", "name": None, "data": data(workspace_method, 12), "experiments": None},
        {
            "rev": "c0ba7f4" + "0" * 33,
            "name": "main",
            "data": data("gacd", 6.0),
            "experiments": [{"name": "choky-sley", "revs": [{"rev": "1" * 40, "data": data("kd", 7.25, "4/255")}]}],
        },
    ]


def test_each_row_says_what_it_changed_and_cells_read_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = {r["experiment"]: r for r in experiment_rows(exp_show("rslad"))}
    assert rows["workspace"]["changed"] == "distill.method=rslad"  # against HEAD
    assert rows["choky-sley"]["changed"] == "distill.attack.eps=4/255, distill.method=kd"  # against its commit
    assert rows["main"]["changed"] == "-" and rows["main"]["method"] == "gacd"
    table = experiments_table(list(rows.values()))
    assert "| 12.0 " in table and "| 6.0 " in table and "| 7.2 " in table  # one decimal everywhere


def test_the_interval_comes_from_the_metrics_file_that_dvc_shows_without_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval_student.json").write_text(json.dumps({"pgd20": {"accuracy": 12, "ci95": [10.1, 14.2]}}))
    rows = experiment_rows(exp_show("gacd"))
    workspace = next(r for r in rows if r["experiment"] == "workspace")
    assert workspace["changed"] == "(none)" and workspace["ci95"]["pgd20"] == [10.1, 14.2]
    assert "12.0 (10.1–14.2)" in experiments_table(rows)
    assert next(r for r in rows if r["experiment"] == "main")["ci95"]["pgd20"] is None  # no such commit here
