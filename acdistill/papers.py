"""The papers' tables as runnable presets: one folder per table under configs/papers/.

A folder holds `table.yaml` (a `TableSpec`: the paper's numbers, cell by cell, and the orderings it claims) and one
params file per block of the table. A block is one setting the paper's table holds fixed (a teacher, a dataset, a
student); its params file is a whole preset whose `ablate.points` are the table's rows, each a named point. A cell
names its block, its row (a point's name) and its attack (one of `eval.attacks`); a claim names two rows of a block
and the attack on which the paper puts the first above the second (a pair of the block's `ablate.compare`).

The folder is found relative to the package (`configs/papers` beside `acdistill/`), or at ACDISTILL_PAPERS_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from acdistill.budgets import fraction
from acdistill.config import Params, load_params
from acdistill.errors import AcdistillError, unknown_name

TABLE_FILE = "table.yaml"
PAPERS_DIR_ENV = "ACDISTILL_PAPERS_DIR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableBudget(_Strict):
    """The threat model the table's robust columns are measured under (both papers: L-inf, eps 8/255)."""

    norm: Literal["Linf", "L2"] = "Linf"
    eps: Annotated[float, BeforeValidator(fraction), Field(ge=0)] = 8 / 255


class Block(_Strict):
    """One setting the table holds fixed, run as one params file of the folder (its ablate.points are the rows)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    params: str = Field(description="the block's params file, relative to the table's folder")
    title: str = ""


class Cell(_Strict):
    """One number of the paper's table: the accuracy (%) of `row` (a point of `block`) under `attack`."""

    block: str
    row: str
    attack: str
    paper: float = Field(ge=0, le=100)
    where: str = Field(description="where the number stands in the paper, e.g. 'Table 2, row 1, FGSM'")
    measurable: bool = Field(True, description="false: the paper's number, which no run of acdistill reproduces")


class Claim(_Strict):
    """An ordering the paper claims: `first` is more accurate than `second` under `attack`, in `block`."""

    text: str
    block: str
    first: str
    second: str
    attack: str


class TableSpec(_Strict):
    """A table of a paper as configs/papers/<id>/table.yaml writes it."""

    title: str
    paper: Literal["gacd", "crdnd"]
    source: str = Field(description="the table's place in the paper, e.g. 'the CRDND report, Table 2'")
    budget: TableBudget = TableBudget()
    blocks: list[Block] = Field(min_length=1)
    cells: list[Cell] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="departures from the paper and unreadable cells")

    @model_validator(mode="after")
    def _names(self) -> TableSpec:
        names = [b.name for b in self.blocks]
        if len(set(names)) < len(names):
            raise ValueError(f"block names must differ: {', '.join(names)}")
        for item in [*self.cells, *self.claims]:
            if item.block not in names:
                raise ValueError(unknown_name("block", item.block, names))
        seen = set()
        for cell in self.cells:
            key = (cell.block, cell.row, cell.attack)
            if key in seen:
                raise ValueError(f"two cells for block {cell.block}, row {cell.row}, attack {cell.attack}")
            seen.add(key)
        return self

    def block(self, name: str) -> Block:
        for block in self.blocks:
            if block.name == name:
                return block
        raise AcdistillError(unknown_name("block", name, [b.name for b in self.blocks]))


def papers_dir() -> Path:
    """configs/papers of the repository the package sits in, or ACDISTILL_PAPERS_DIR."""
    env = os.environ.get(PAPERS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs" / "papers"


def table_ids() -> list[str]:
    """The tables there are: the folders of papers_dir() that hold a table.yaml, sorted."""
    root = papers_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / TABLE_FILE).is_file())


def table_dir(table_id: str) -> Path:
    ids = table_ids()
    if table_id not in ids:
        raise AcdistillError(unknown_name("table", table_id, ids))
    return papers_dir() / table_id


def load_table(table_id: str) -> TableSpec:
    """The TableSpec of configs/papers/<table_id>/table.yaml; AcdistillError for an unknown id or an invalid file."""
    path = table_dir(table_id) / TABLE_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise AcdistillError(f"{path}: invalid YAML") from None
    try:
        return TableSpec.model_validate(raw)
    except ValueError as e:
        raise AcdistillError(f"{path}: {e}") from None


def block_params(spec_dir: str | Path, block: Block | str, spec: TableSpec | None = None) -> Params:
    """The validated params of one block: its params file in the table's folder `spec_dir`. `block` is a Block, or
    a block's name (read from `spec`, or from the folder's table.yaml)."""
    spec_dir = Path(spec_dir)
    if isinstance(block, str):
        if spec is None:
            spec = TableSpec.model_validate(yaml.safe_load((spec_dir / TABLE_FILE).read_text()))
        block = spec.block(block)
    return load_params(spec_dir / block.params)
