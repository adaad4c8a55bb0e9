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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from acdistill.config import Params, load_params
from acdistill.errors import AcdistillError, unknown_name

TABLE_FILE = "table.yaml"
PAPERS_DIR_ENV = "ACDISTILL_PAPERS_DIR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    budget: str = Field(description="what the presets run, e.g. the paper's epochs on the full data")
    blocks: dict[str, str] = Field(min_length=1, description="block id -> its params file in the table's folder")
    cells: list[Cell] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="departures from the paper and unreadable cells")

    @model_validator(mode="after")
    def _names(self) -> TableSpec:
        names = list(self.blocks)
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

    def block_file(self, name: str) -> str:
        if name not in self.blocks:
            raise AcdistillError(unknown_name("block", name, list(self.blocks)))
        return self.blocks[name]


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
    except ValidationError as e:  # one line: the first error, where it is
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        raise AcdistillError(f"{path}: {where}: {message}" if where else f"{path}: {message}") from None


def block_params(table_id: str, block: str, overrides: dict[str, Any] | None = None) -> Params:
    """The validated params of one block of a table: its params file, then the dotted `overrides` (as `-S` gives
    them). AcdistillError for an unknown table or block, or params that do not validate."""
    spec = load_table(table_id)
    overrides = overrides or {}
    given_as = {key: f"-S {key}={value}" for key, value in overrides.items()}  # an error names the option
    return load_params(table_dir(table_id) / spec.block_file(block), overrides, given_as)
