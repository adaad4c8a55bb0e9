"""acdistill reproduce: run a paper table's presets (configs/papers/<table>/, acdistill.papers) and set the measured
numbers beside the paper's.

A table has blocks (one params file each: a teacher and dataset setting) whose rows are the explicit points of the
block's `ablate.points`. For each block the teacher goes to reproduce/<table>/<block>/teacher.safetensors
(`fetch_teacher`, reused when present) and the rows run through `ablate` (runs in reproduce/<table>/<block>/runs,
its tables in .../ablate.json), so that a rerun reuses every finished point, as ablate does. Then
reproduce/<table>.md and .json give, per cell, the paper's number, the measured one with its 95 % interval and
Δ = measured − paper, and per claim whether it holds.

Where the numbers come from: ablate's metrics (ablate.json) keep each point's accuracy and interval; its details
(ablate_details.json, "points") keep each row's run directory; each run's evaluation (eval-<hash>.json, the hash of
the point's eval and data sections: `points.evaluation_digest`) keeps which test images each attack got right
(`correct`, bit-packed). A claim's difference is `compare.difference` on those per-image results: paired over the
images when both rows saw the same ones.

`--dry-run` estimates the cost of every row from the throughputs measured in BENCHMARKS.md
(`acdistill.pipeline.costs`), scaled to other methods and architectures where nothing was measured, each estimate
marked measured or scaled; the teacher's forward passes are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from acdistill.config import FINETUNE, NAME, Params, dotted_items
from acdistill.errors import AcdistillError, unknown_name
from acdistill.io import json_text, write_files
from acdistill.methods import METHODS
from acdistill.papers import TableSpec, block_params, load_table, table_ids
from acdistill.pipeline.ablate import ablate
from acdistill.pipeline.common import check_data, echo
from acdistill.pipeline.compare import Measured, difference
from acdistill.pipeline.costs import basis_of, estimate_row, train_estimate, train_images
from acdistill.pipeline.points import (
    ablation_points,
    evaluation_digest,
    evaluation_path,
    point_params,
    read_result,
    with_seeds,
)
from acdistill.pipeline.training import fetch_teacher

ROOT = Path("reproduce")
TEACHER = "teacher.safetensors"

# Overrides that make a run smaller than the preset's: named in the report's "Budget:" line.
SMALLER = ("epochs", "train_subset", "test_subset", "n", "n_per_attack")


# --- what a table runs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One block of a table: its id, its params (the block's file, the overrides, ablate.only = its rows), its
    rows to run and the directory its outputs go to."""

    id: str
    params: Params
    rows: list[str]
    root: Path

    @property
    def teacher(self) -> Path:
        return self.root / TEACHER

    def points(self) -> list[dict[str, Any]]:
        return ablation_points(self.params)

    def needs_teacher(self) -> bool:
        return any(METHODS.get(point_params(self.params, p).distill.method).needs_teacher for p in self.points())


def block_rows(params: Params) -> list[str]:
    return [p[NAME] for p in params.ablate.points if NAME in p]


def check_table(table_id: str, table: TableSpec, per_block: dict[str, Params]) -> None:
    """Every cell and claim names a row of its block (TableSpec checked that the block is the table's) and an attack
    those rows evaluate, unless the cell is not measurable."""
    named = [(cell, [cell.row], cell.measurable) for cell in table.cells]
    named += [(claim, [claim.first, claim.second], True) for claim in table.claims]
    for item, item_rows, measurable in named:
        params = per_block[item.block]
        rows = block_rows(params)
        for row in item_rows:
            if row not in rows:
                raise AcdistillError(f"{table_id}: block {item.block}: {unknown_name('row', row, rows)}")
        if measurable and item.attack not in attacks_of_rows(params, item_rows):
            raise AcdistillError(
                f"{table_id}: block {item.block}: attack '{item.attack}' is not in its eval.attacks "
                f"({', '.join(params.eval.attacks)})"
            )


def attacks_of_rows(params: Params, rows: list[str]) -> set[str]:
    """The attacks the named rows evaluate (each row's eval.attacks after ablate.fixed and its own values); with
    no rows, the block's eval.attacks."""
    points = [p for p in params.ablate.points if p.get(NAME) in rows]
    if not points:
        return set(params.eval.attacks)
    return {a for p in points for a in point_params(params, p).eval.attacks}


def plan(
    table_id: str, rows: list[str] | None, overrides: dict[str, Any], root: Path = ROOT
) -> tuple[TableSpec, list[Block]]:
    """The table and its blocks with the rows to run (all of them, or those of `rows`), each block's params with
    `overrides` (-S, --jobs) and ablate.only set to its rows. Raises AcdistillError on an unknown table or row,
    before anything is written."""
    table = load_table(table_id)
    per_block = {b: rows_overridden(block_params(table_id, b, overrides), overrides) for b in table.blocks}
    check_table(table_id, table, per_block)
    every = list(dict.fromkeys(r for p in per_block.values() for r in block_rows(p)))
    if rows is not None and not rows:
        raise AcdistillError(f"--rows: no row given; choose from: {', '.join(every)}")
    for row in rows or []:
        if row not in every:
            raise AcdistillError(f"--rows: {unknown_name('row', row, every)}")
    blocks = []
    for block_id, params in per_block.items():
        chosen = [r for r in block_rows(params) if rows is None or r in rows]
        if chosen:
            only = params.with_overrides({"ablate.only": chosen})
            blocks.append(Block(block_id, only, chosen, root / table_id / block_id))
    return table, blocks


def rows_overridden(params: Params, overrides: dict[str, Any]) -> Params:
    """The block's params whose rows take the -S values too: a row's own value of a key the user set (a row's
    `distill.epochs`, say) would otherwise win, and the run would not be the budget its report states."""
    points = [{k: overrides.get(k, v) for k, v in point.items()} for point in params.ablate.points]
    return params.with_overrides({"ablate.points": points}) if points != params.ablate.points else params


def robustbench_name(path: Path) -> str | None:
    """The RobustBench entry a teacher file stands for, when its path has robustbench's layout
    (<model_dir>/<dataset>/<Linf|L2|corruptions>/<Name>.pt)."""
    if path.suffix == ".pt" and path.parent.name in ("Linf", "L2", "corruptions"):
        return path.stem
    return None


def check_teachers(table_id: str, blocks: list[Block]) -> None:
    """A block whose teacher is a file (teacher.source file) must have it, unless its teacher was fetched before."""
    for block in blocks:
        t = block.params.teacher
        if t.source != "file" or block.teacher.is_file() or not block.needs_teacher():
            continue
        path = Path(t.path)
        if not path.is_file():
            name = robustbench_name(path)
            hint = f" (RobustBench name {name}: teacher.source robustbench fetches it)" if name else ""
            raise AcdistillError(
                f"{table_id}: block {block.id}: teacher file not found: {path}{hint}; place the release file there"
            )


# --- the run -------------------------------------------------------------------------------------------------------


def fetch_block_teacher(block: Block, data_dir: Path | None, device: str | torch.device | None) -> None:
    """The block's teacher, fetched (or trained) once into the block's folder and reused afterwards."""
    if not block.needs_teacher():
        return
    if block.teacher.is_file():
        echo(f"reproduce: block {block.id}: teacher reused from {block.teacher}")
        return
    echo(f"reproduce: block {block.id}: fetching the teacher into {block.teacher}")
    metrics = block.root / "teacher_metrics.json"
    fetch_teacher(block.params, out=block.teacher, metrics=metrics, data_dir=data_dir, device=device)


def run_block(block: Block, data_dir: Path | None, device: str | torch.device | None) -> dict[str, Any]:
    """ablate over the block's rows, from its teacher; returns ablate's summary."""
    echo(f"reproduce: block {block.id}: rows {', '.join(block.rows)}")
    return ablate(
        block.params,
        teacher=block.teacher,
        runs=block.root / "runs",
        out=block.root / "ablate.json",
        data_dir=data_dir,
        device=device,
    )


def row_results(block: Block, summary: dict[str, Any]) -> dict[str, dict[str, Measured | None]]:
    """{row: {attack: Measured}} from each row's evaluations (one per seed with ablate.seeds), which ablate's
    table rows name by their run directories."""
    params = block.params
    seeds = params.ablate.seeds
    by_name = {r[NAME]: r for r in summary["points"] if NAME in r}
    out: dict[str, dict[str, Measured | None]] = {}
    for point in block.points():
        row = by_name.get(point.get(NAME))
        if row is None:
            continue
        dirs = [Path(d) for d in row["runs"]] if seeds else [Path(row["run"])]
        evaluations = []
        for run, seeded in zip(dirs, with_seeds([point], seeds)):
            digest = evaluation_digest(point_params(params, seeded))
            evaluation = read_result(evaluation_path(run, digest), digest)
            if evaluation is None:
                raise AcdistillError(f"row {point[NAME]}: no evaluation in {run} for these eval settings")
            evaluations.append(evaluation["eval"])
        attacks = [a for a in evaluations[0] if isinstance(evaluations[0][a], dict) and "accuracy" in evaluations[0][a]]
        out[point[NAME]] = {a: Measured.of([e[a] for e in evaluations]) for a in attacks}
    return out


def claim_verdict(first: Measured | None, second: Measured | None) -> tuple[str, dict[str, Any] | None]:
    """ "holds" when first − second > 0 with its 95 % interval excluding 0, "fails" when < 0 excluding 0, else
    "within noise"; with the difference (points) and its interval. `compare.difference` pairs the two rows over the
    images when they saw the same ones. "not run" when a row is missing, "not comparable" when one row has one run
    and the other several (ablate.seeds differ)."""
    if first is None or second is None:
        return "not run", None
    diff = difference(first, second)
    if diff is None:
        return "not comparable (one seed against several)", None
    shown = {"difference": round(100 * diff.estimate, 2), "ci95": diff.percent(), "method": diff.method}
    if diff.within_noise:
        return "within noise", shown
    return ("holds" if diff.estimate > 0 else "fails"), shown


def lowers(key: str, value: Any, presets: list[Params]) -> bool:
    """Whether the override `key=value` makes a run smaller than some block or row of the presets (`presets`: the
    blocks' params before the overrides): fewer epochs, a subset of the full data, fewer evaluated images. A value
    that cannot be compared with the preset's (a range, an index file) counts as smaller."""
    if key.rpartition(".")[2] not in SMALLER or value is None:
        return False
    before = []
    for p in presets:
        before.append(dotted_items(p.model_dump(mode="json")).get(key))
        before += [point[key] for point in p.ablate.points if key in point]
    numbers = (int, float)
    return any(b is None or not isinstance(b, numbers) or not isinstance(value, numbers) or value < b for b in before)


def presets_of(table_id: str, table: TableSpec) -> list[Params]:
    """Every block's params as its file gives them, before any override."""
    return [block_params(table_id, block) for block in table.blocks]


def result_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that can change a result: all but ablate.jobs (--jobs), which only schedules the runs."""
    return {k: v for k, v in overrides.items() if k != "ablate.jobs"}


def budget_line(table: TableSpec, overrides: dict[str, Any], presets: list[Params]) -> str:
    """The budget the run had: the table's, and every override that can change a result; "smaller than the
    paper's" when one lowers epochs, a subset or the number of evaluated images below a preset's."""
    changed = result_overrides(overrides)
    given = ", ".join(f"{k}={v}" for k, v in changed.items())
    if any(lowers(k, v, presets) for k, v in changed.items()):
        return f"Budget: smaller than the paper's: {given} (the presets: {table.budget})"
    if changed:
        return f"Budget: {table.budget}; overrides: {given}"
    return f"Budget: {table.budget}"


def tabulate_table(
    table_id: str, table: TableSpec, measured: dict[str, dict[str, dict[str, Measured | None]]], budget: str
) -> dict[str, Any]:
    """The report's contents: per cell the paper's number, the measured one with its interval and Δ; per claim
    its verdict."""
    cells = []
    for c in table.cells:
        m = measured.get(c.block, {}).get(c.row, {}).get(c.attack) if c.measurable else None
        entry: dict[str, Any] = {**c.model_dump(), "measured": None, "ci95": None, "delta": None, "status": "not run"}
        if m is not None:
            ci = m.interval()
            entry |= {
                "measured": round(100 * ci.estimate, 2),
                "ci95": ci.percent(),
                "delta": round(100 * ci.estimate - c.paper, 2),
                "n": len(m.runs[0]),
                "status": "measured",
            }
        cells.append(entry)
    claims = []
    for cl in table.claims:
        rows = measured.get(cl.block, {})
        first, second = (rows.get(r, {}).get(cl.attack) for r in (cl.first, cl.second))
        verdict, diff = claim_verdict(first, second)
        claims.append({**cl.model_dump(), "verdict": verdict, **(diff or {})})
    return {
        "table": table_id,
        "title": table.title,
        "source": table.source,
        "budget": budget,
        "cells": cells,
        "claims": claims,
        "notes": table.notes,
    }


def markdown(report: dict[str, Any]) -> str:
    cells = [
        [
            c["block"],
            c["row"],
            c["attack"],
            f"{c['paper']:.2f}",
            "not run" if c["measured"] is None else f"{c['measured']:.2f} ({c['ci95'][0]:.2f}–{c['ci95'][1]:.2f})",
            "" if c["delta"] is None else f"{c['delta']:+.2f}",
            c["where"],
        ]
        for c in report["cells"]
    ]
    claims = [
        [
            c["text"],
            c["block"],
            f"{c['first']} > {c['second']}",
            c["attack"],
            "" if "difference" not in c else f"{c['difference']:+.2f} ({c['ci95'][0]:+.2f} to {c['ci95'][1]:+.2f})",
            c["verdict"],
        ]
        for c in report["claims"]
    ]
    parts = [
        f"# {report['title']}\n",
        f"Table `{report['table']}`; the paper's numbers: {report['source']}.\n",
        f"{report['budget']}\n",
        "Accuracies in percent; the measured ones with their 95 % interval over the test images (Wilson; over seeds "
        "and images with ablate.seeds); Δ = measured − paper.\n",
        tabulate(
            cells,
            headers=["block", "row", "attack", "paper", "measured (95 % interval)", "Δ", "where"],
            tablefmt="github",
            disable_numparse=True,
        )
        + "\n",
    ]
    if claims:
        parts += [
            "## Claims\n",
            "A claim holds when first − second > 0 and its 95 % interval (paired over the images where both rows "
            "saw the same ones) excludes 0, fails when < 0 excluding 0, and is within noise otherwise.\n",
            tabulate(
                claims,
                headers=["claim", "block", "ordering", "attack", "difference", "verdict"],
                tablefmt="github",
                disable_numparse=True,
            )
            + "\n",
        ]
    if report["notes"]:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in report["notes"]) + "\n"]
    return "\n".join(parts)


def reproduce(
    table_id: str,
    *,
    rows: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path = ROOT,
    data_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run the table's rows (all, or `rows`) block by block, then write <root>/<table>.md and .json. `overrides`
    (dotted params keys) apply to every block. Returns the report."""
    overrides = overrides or {}
    table, blocks = plan(table_id, rows, overrides, root)
    check_teachers(table_id, blocks)
    for block in blocks:  # every block's data, before hours of another block's training
        check_data(block.params, data_dir, "train")
    for block in blocks:  # every teacher next: a zoo download that fails offline stops the run before any training
        fetch_block_teacher(block, data_dir, device)
    measured = {block.id: row_results(block, run_block(block, data_dir, device)) for block in blocks}
    report = tabulate_table(table_id, table, measured, budget_line(table, overrides, presets_of(table_id, table)))
    report["overrides"] = result_overrides(overrides)
    out, page = root / f"{table_id}.json", markdown(report)
    write_files({out: json_text(report), out.with_suffix(".md"): page})
    echo(page)
    echo(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def dry_run(table_id: str, rows: list[str] | None, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the table's rows (and each teacher trained here), with its estimated GPU- and CPU-hours, shown as
    a table; writes nothing. Returns the rows as shown, before rounding."""
    table, blocks = plan(table_id, rows, overrides)
    check_teachers(table_id, blocks)
    lines = [line for block in blocks for line in block_costs(block)]
    show_costs(table_id, table, overrides, lines)
    return lines


def block_costs(block: Block) -> list[dict[str, Any]]:
    """One line per run of a block: its teacher when trained here, then each row (once per seed)."""
    p0 = block.params
    lines = []
    if p0.teacher.source == "train" and block.needs_teacher():
        t = p0.teacher
        g, c, why = train_estimate(t.train, t.arch, p0, train_images(p0))
        lines.append(
            {
                "block": block.id,
                "row": "(teacher)",
                "method": t.train.method,
                "student": t.arch,
                "epochs": t.train.epochs,
                "dataset": p0.data.dataset,
                "runs": 1,
                "gpu_hours": g,
                "cpu_hours": c,
                "estimate": basis_of(why),
            }
        )
    for point in block.points():
        p = point_params(p0, point)
        e = estimate_row(p, point)
        runs = len(p0.ablate.seeds or [None])  # one run per seed
        aft_epochs = p.aft.for_student(p.distill.epochs, p.distill.student).epochs if point.get(FINETUNE) else 0
        lines.append(
            {
                "block": block.id,
                "row": point[NAME],
                "method": p.distill.method + (f" + aft {p.aft.method}" if point.get(FINETUNE) else ""),
                "student": p.distill.student,
                "epochs": p.distill.epochs + aft_epochs,
                "dataset": p.data.dataset,
                "runs": runs,
                "gpu_hours": runs * e.gpu_hours,
                "cpu_hours": runs * e.cpu_hours,
                "estimate": e.basis,
            }
        )
    return lines


def show_costs(table_id: str, table: TableSpec, overrides: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """The dry run's table: each line's basis as measured/scaled with a numbered footnote saying from what."""
    echo(f"{table.title}\n{budget_line(table, overrides, presets_of(table_id, table))}\n")
    notes: list[str] = []
    shown = []
    for line in lines:
        kind, _, why = line["estimate"].partition(": ")
        if why not in notes:
            notes.append(why)
        shown.append(
            {
                **line,
                "gpu_hours": f"{line['gpu_hours']:.3g}",
                "cpu_hours": f"{line['cpu_hours']:.3g}",
                "estimate": f"{kind} [{notes.index(why) + 1}]",
            }
        )
    echo(tabulate(shown, headers="keys", tablefmt="simple"))
    echo("\n" + "\n".join(f"[{i}] {why}" for i, why in enumerate(notes, start=1)))
    gpu, cpu = sum(x["gpu_hours"] for x in lines), sum(x["cpu_hours"] for x in lines)
    echo(
        f"\ntotal: {gpu:.2f} GPU-hours (H100; training only: BENCHMARKS.md has no GPU attack rate), {cpu:.1f} "
        f"CPU-hours (2 cores; training and evaluation), every run of every row; the teacher's forward passes are "
        "not counted. Nothing was run or written."
    )


def listing() -> list[dict[str, Any]]:
    out = []
    for table_id in table_ids():
        table = load_table(table_id)
        rows = sum(len(block_rows(block_params(table_id, b))) for b in table.blocks)
        out.append(
            {
                "table": table_id,
                "title": table.title,
                "blocks": len(table.blocks),
                "rows": rows,
                "cells": len(table.cells),
            }
        )
    return out
