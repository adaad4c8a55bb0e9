"""The papers' tables as presets: configs/papers/<table-id>/table.yaml (the paper's numbers, its claims, the budget)
and one params file per block. `acdistill reproduce` runs them (acdistill.pipeline.reproduce).

(A minimal version holding the table model that `reproduce` reads; the presets' own module replaces it.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from acdistill.config import Params, load_params
from acdistill.errors import AcdistillError, unknown_name


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cell(_Frozen):
    """One number of the paper's table: its block (a params file), its row (an explicit point's name), its attack
    (an eval attack of acdistill), the paper's value (percent) and where the paper gives it."""

    block: str
    row: str
    attack: str
    paper: float
    where: str
    measurable: bool = True


class Claim(_Frozen):
    """An ordering the paper states or its table shows: first > second under attack, in one block."""

    text: str
    block: str
    first: str
    second: str
    attack: str


class TableSpec(_Frozen):
    title: str
    paper: Literal["gacd", "crdnd"]
    source: str
    budget: str
    blocks: dict[str, str]
    cells: list[Cell]
    claims: list[Claim] = []
    notes: list[str] = []


def papers_dir() -> Path:
    """$ACDISTILL_PAPERS_DIR, else configs/papers of the repository."""
    env = os.environ.get("ACDISTILL_PAPERS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs" / "papers"


def table_ids() -> list[str]:
    root = papers_dir()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "table.yaml").is_file())


def table_dir(table_id: str) -> Path:
    return papers_dir() / table_id


def load_table(table_id: str) -> TableSpec:
    ids = table_ids()
    if table_id not in ids:
        raise AcdistillError(unknown_name("table", table_id, ids))
    path = table_dir(table_id) / "table.yaml"
    try:
        raw: Any = yaml.safe_load(path.read_text())
        return TableSpec.model_validate(raw)
    except yaml.YAMLError as e:
        raise AcdistillError(f"{path}: invalid YAML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise AcdistillError(f"{path}: {where}: {first['msg']}") from None


def block_params(table_id: str, block: str, overrides: dict[str, Any] | None = None) -> Params:
    """The block's params file with dotted `overrides` applied."""
    table = load_table(table_id)
    if block not in table.blocks:
        raise AcdistillError(unknown_name("block", block, list(table.blocks)))
    return load_params(table_dir(table_id) / table.blocks[block], overrides or {})
