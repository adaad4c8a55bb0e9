"""Every table of configs/papers/ (acdistill.papers): its table.yaml validates, every block's params file loads, and
every cell and claim names a row, an attack and a pair its block runs. No training."""

import pytest
import yaml
from conftest import REPO, run

from acdistill.attacks import EVAL_ATTACKS
from acdistill.config import load_params
from acdistill.data import DATASETS
from acdistill.errors import AcdistillError
from acdistill.methods import METHODS
from acdistill.models import list_models
from acdistill.papers import PAPERS_DIR_ENV, TableSpec, block_params, load_table, table_ids
from acdistill.pipeline.points import point_params

PAPERS = REPO / "configs" / "papers"
FOLDERS = sorted(p.name for p in PAPERS.iterdir() if p.is_dir())


def test_table_ids_are_the_folders_of_configs_papers():
    assert FOLDERS and table_ids() == FOLDERS
    for needed in ("crdnd-table1", "crdnd-table2", "gacd-table2", "gacd-table3"):
        assert needed in FOLDERS


def test_an_unknown_table_names_the_tables():
    with pytest.raises(AcdistillError, match="unknown table 'crdnd-tabel2'; did you mean crdnd-table2"):
        load_table("crdnd-tabel2")


def test_the_papers_dir_can_be_moved(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "table.yaml").write_text((PAPERS / "crdnd-table2" / "table.yaml").read_text())
    (tmp_path / "not-a-table").mkdir()
    monkeypatch.setenv(PAPERS_DIR_ENV, str(tmp_path))
    assert table_ids() == ["mine"]


def test_a_cell_of_an_unknown_block_is_refused():
    raw = yaml.safe_load((PAPERS / "crdnd-table2" / "table.yaml").read_text())
    raw["cells"][0]["block"] = "rn19"
    with pytest.raises(ValueError, match="unknown block 'rn19'"):
        TableSpec.model_validate(raw)


@pytest.mark.parametrize("table_id", FOLDERS)
def test_the_table_is_whole(table_id):
    spec = load_table(table_id)
    assert spec.title and spec.source and spec.blocks
    assert spec.cells or any("lacks" in note for note in spec.notes), "a table without cells says why"
    models, attacks = set(list_models()), set(EVAL_ATTACKS)
    for name, file in spec.blocks.items():
        params = block_params(table_id, name)
        assert params == load_params(PAPERS / table_id / file)
        points = {p["name"]: p for p in params.ablate.points}
        assert points, f"{table_id}/{name}: no named points"
        for row_name, point in points.items():
            resolved = point_params(params, point)
            assert resolved.distill.method in METHODS, (name, row_name)
            assert resolved.distill.student in models, (name, row_name)
            assert resolved.data.dataset in DATASETS, (name, row_name)
            assert resolved.data.train_subset is None and resolved.data.test_subset is None, "full data"
        cells = [c for c in spec.cells if c.block == name]
        claims = [c for c in spec.claims if c.block == name]
        for item in cells + claims:
            rows = [item.row] if hasattr(item, "row") else [item.first, item.second]
            for row in rows:
                assert row in points, f"{table_id}/{name}: row {row} is no named point"
            assert item.attack in params.eval.attacks, f"{table_id}/{name}: {item.attack} is not evaluated"
            assert item.attack in attacks
        pairs = {tuple(pair) for pair in params.ablate.compare}
        for claim in claims:
            assert (claim.first, claim.second) in pairs, f"{table_id}/{name}: {claim.first} - {claim.second}"
    for cell in spec.cells:
        assert cell.where and 0 <= cell.paper <= 100


@pytest.mark.parametrize("table_id", FOLDERS)
def test_the_dry_run_of_every_table_lists_each_row_and_writes_nothing(table_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = run("reproduce", table_id, "--dry-run").output
    spec = load_table(table_id)
    for block in spec.blocks:
        for point in block_params(table_id, block).ablate.points:
            assert f"{block} " in output and f" {point['name']} " in output, (block, point["name"])
    assert "GPU-hours" in output and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, smaller",
    [
        ("distill.epochs=1", True),
        ("distill.epochs=500", False),
        ("data.train_subset=0:100", True),
        ("data.train_subset=null", False),
        ("eval.n=100", True),
    ],
)
def test_the_budget_line_calls_a_run_smaller_only_when_an_override_lowers_the_presets(
    override, smaller, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    output = run("reproduce", "gacd-table3", "--dry-run", "-S", override).output
    assert ("Budget: smaller than the paper's: " in output) == smaller and override.split("=")[0] in output
