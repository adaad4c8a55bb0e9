"""Tables of measured points with their 95 % intervals, and which differences between points are within noise.

A point is one setting measured by one run, or by one run per seed; each run keeps, per attack, which of its test
images it got right (`acdistill.engine.evaluate.summarize`). From those, `acdistill.stats` gives each accuracy's
interval and each difference's, paired over images wherever two runs saw the same images. `ablate` and `report` build
their tables here: ablate's table, ties and comparisons from its runs (`ablation_tables`) and its search's choices
(`search_choice`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from acdistill.config import NAME, SEARCH_BY, AblateParams, Params
from acdistill.pipeline.points import point_label
from acdistill.stats import (
    Interval,
    independent_difference,
    over_seeds,
    paired_difference,
    seeded_difference,
    unpack_bits,
    wilson,
)

# Result fields that are not accuracies of an attack
NOT_ATTACKS = ("sanity", "sweep")


@dataclass(frozen=True)
class Measured:
    """One attack's per-image results for one point: bool [n] per run (one run per seed), on the images that
    `images` names (None when the runs saw different images)."""

    runs: tuple[np.ndarray, ...]
    images: str | None

    @classmethod
    def of(cls, results: list[dict[str, Any]]) -> Measured | None:
        """From each run's result of one attack ({n, images, correct}); None when a run kept no per-image results
        (written before acdistill kept them)."""
        if not results or any("correct" not in r for r in results):
            return None
        images = {r["images"] for r in results}
        return cls(
            tuple(unpack_bits(r["correct"], r["n"]) for r in results), images.pop() if len(images) == 1 else None
        )

    def interval(self) -> Interval:
        """Wilson's over the images for one run; over seeds and images for several."""
        if len(self.runs) == 1:
            return wilson(int(self.runs[0].sum()), len(self.runs[0]))
        if self.images is None:
            raise ValueError("runs of one point at several seeds must share their test images")
        return over_seeds(np.stack(self.runs))


def difference(a: Measured, b: Measured) -> Interval | None:
    """acc(a) - acc(b) with its 95 % interval, paired over images when both saw the same ones; None when one point
    has one run and the other several (a single run has no seed spread to set against the other's)."""
    same_images = a.images is not None and a.images == b.images
    if len(a.runs) == 1 and len(b.runs) == 1:
        x, y = a.runs[0], b.runs[0]
        if same_images:
            return paired_difference(x, y)
        return independent_difference(int(x.sum()), len(x), int(y.sum()), len(y))
    if len(a.runs) == 1 or len(b.runs) == 1:
        return None
    return seeded_difference(np.stack(a.runs), np.stack(b.runs), paired_images=same_images)


def verdict(diff: Interval | None, first: str, second: str) -> str:
    if diff is None:
        return "not comparable (one seed against several)"
    if diff.within_noise:
        return "within noise"
    return f"{first} higher" if diff.estimate > 0 else f"{second} higher"


def attacks_of(results: dict[str, Any]) -> list[str]:
    return [k for k, r in results.items() if k not in NOT_ATTACKS and isinstance(r, dict) and "accuracy" in r]


def measured_points(per_point_runs: list[list[dict[str, Any]]]) -> list[dict[str, Measured | None]]:
    """For each point (the evaluation results of its runs), {attack: Measured}."""
    out = []
    for runs in per_point_runs:
        attacks = [a for a in attacks_of(runs[0]) if all(a in r for r in runs)]
        out.append({a: Measured.of([r[a] for r in runs]) for a in attacks})
    return out


def interval_columns(measured: dict[str, Measured | None]) -> dict[str, Any]:
    """{<attack>: mean accuracy (%), <attack>_ci95: [low, high] (%)} of one point."""
    row: dict[str, Any] = {}
    for attack, m in measured.items():
        if m is None:
            continue
        ci = m.interval()
        row[attack] = round(100 * ci.estimate, 3)
        row[f"{attack}_ci95"] = ci.percent()
    return row


def mean_and_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean, and the sample standard deviation (None from one value)."""
    return round(statistics.fmean(values), 3), (round(statistics.stdev(values), 3) if len(values) > 1 else None)


def ties_with_best(labels: list[str], measured: list[dict[str, Measured | None]]) -> dict[str, dict[str, Any]]:
    """Per attack: the point with the highest accuracy, and the points whose difference from it is within noise,
    each with that difference and its interval (percent)."""
    out: dict[str, dict[str, Any]] = {}
    attacks = list(dict.fromkeys(a for m in measured for a in m))
    for attack in attacks:
        have = [(label, m[attack]) for label, m in zip(labels, measured) if m.get(attack) is not None]
        if len(have) < 2:
            continue
        best_label, best = max(have, key=lambda lm: lm[1].interval().estimate)
        ties = []
        for label, m in have:
            if label == best_label:
                continue
            diff = difference(m, best)
            if diff is not None and diff.within_noise:
                ties.append({"point": label, "difference": round(100 * diff.estimate, 2), "ci95": diff.percent()})
        out[attack] = {"best": best_label, "within_noise": ties}
    return out


def comparisons(
    pairs: list[tuple[str, str]], labels: list[str], measured: list[dict[str, Measured | None]]
) -> list[dict[str, Any]]:
    """For each (first, second) pair of point labels and each attack both measured: first - second in percent, its
    interval and the verdict."""
    index = {label: i for i, label in enumerate(labels)}
    rows = []
    for first, second in pairs:
        a, b = measured[index[first]], measured[index[second]]
        for attack in (x for x in a if x in b and a[x] is not None and b[x] is not None):
            diff = difference(a[attack], b[attack])
            rows.append(
                {
                    "first": first,
                    "second": second,
                    "attack": attack,
                    "difference": None if diff is None else round(100 * diff.estimate, 2),
                    "ci95": None if diff is None else diff.percent(),
                    "method": None if diff is None else diff.method,
                    "verdict": verdict(diff, first, second),
                }
            )
    return rows


def cell(row: dict[str, Any], key: str) -> Any:
    """A value with its interval (`<key>_ci95`) or its standard deviation (`<key>_sd`) when the row has one."""
    ci, sd = row.get(f"{key}_ci95"), row.get(f"{key}_sd")
    if ci is not None:
        return f"{row[key]:.1f} ({ci[0]:.1f}–{ci[1]:.1f})"
    if sd is not None:
        return f"{row[key]:.2f} ± {sd:.2f}"
    return row.get(key, "")


def markdown_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows as a table; a column with a <column>_ci95 or <column>_sd companion shows as mean (interval) or
    mean ± sd."""
    if not rows:
        return "(no points)"
    keys = dict.fromkeys(k for r in rows for k in r)  # explicit points set different keys
    companions = ("_ci95", "_sd")
    headers = [
        k
        for k in keys
        if k not in ("run", "runs") and not any(k.endswith(c) and k.removesuffix(c) in keys for c in companions)
    ]
    return tabulate([[cell(r, k) for k in headers] for r in rows], headers=headers, tablefmt=fmt, floatfmt=".2f")


def ties_text(ties: dict[str, dict[str, Any]]) -> str:
    """One line per attack: its best point, and those within noise of it."""
    lines = []
    for attack, t in ties.items():
        tied = ", ".join(
            f"{x['point']} ({x['difference']:+.1f}, {x['ci95'][0]:+.1f} to {x['ci95'][1]:+.1f})"
            for x in t["within_noise"]
        )
        # max() keeps the first of equal accuracies: the others are named, not ranked below it
        equal = [x["point"] for x in t["within_noise"] if x["difference"] == 0]
        best = f"{t['best']} (as high: {', '.join(equal)})" if equal else t["best"]
        lines.append(f"- {attack}: highest {best}; within noise of it: {tied or 'none'}")
    return "\n".join(lines)


def comparisons_table(rows: list[dict[str, Any]], fmt: str) -> str:
    return tabulate(
        [
            [
                f"{r['first']} − {r['second']}",
                r["attack"],
                "" if r["difference"] is None else f"{r['difference']:+.2f}",
                "" if r["ci95"] is None else f"{r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f}",
                r["verdict"],
            ]
            for r in rows
        ],
        headers=["comparison", "attack", "difference (points)", "95 % interval", "verdict"],
        tablefmt=fmt,
    )


def row_of(point: dict[str, Any], result: dict[str, Any], evaluation: dict[str, Any], run: Path) -> dict[str, Any]:
    """One run's row: its accuracies with their Wilson intervals, the worst class of its last attack, its minutes."""
    results = evaluation["eval"]
    attacks = {}
    for name, r in results.items():
        attacks[name] = r["accuracy"]
        measured = Measured.of([r])
        if measured is not None:
            attacks[f"{name}_ci95"] = measured.interval().percent()
    last = [name for name in results if name != "all_attacks"][-1]
    return {
        **{k: v for k, v in point.items() if k != SEARCH_BY},
        **attacks,
        f"worst_class_{last}": results[last]["worst_class"],
        "train_minutes": result["train_minutes"],
        "run": str(run),
    }


def descending(value: Any) -> tuple:
    """Sort key: numbers largest first, then other values (a method name, an unset column) alphabetically."""
    return (0, -value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def over_seeds_rows(
    points: list[dict[str, Any]], rows: list[dict[str, Any]], evaluations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per point from its runs (consecutive in `rows`, one per seed): each accuracy's mean with its 95 %
    interval over seeds and images (<attack>_ci95), and every other measured column's mean and sample standard
    deviation (<column>_sd)."""
    per_point = len(rows) // len(points)
    out = []
    for point, start in zip(points, range(0, len(rows), per_point)):
        runs = rows[start : start + per_point]
        measured = measured_points([[e["eval"] for e in evaluations[start : start + per_point]]])[0]
        row: dict[str, Any] = {**point, "seeds": [r["seed"] for r in runs]}
        accuracies = interval_columns(measured)
        for column in (k for k in runs[0] if k not in point and k not in ("seed", "run") and not k.endswith("_ci95")):
            if column in accuracies:
                row[column], row[f"{column}_ci95"] = accuracies[column], accuracies[f"{column}_ci95"]
            else:
                row[column], row[f"{column}_sd"] = mean_and_sd([r[column] for r in runs])
        out.append({**row, "runs": [r["run"] for r in runs]})
    return out


def search_table(records: list[dict[str, Any]], key: str, fmt: str) -> str:
    values = [t["value"] for t in records[0]["values"]]
    rows = [
        [r["point"], r["by"]]
        + [f"{t['accuracy']:.1f} ({t['ci95'][0]:.1f}–{t['ci95'][1]:.1f})" for t in r["values"]]
        + [r["chosen"], ", ".join(map(str, r.get("within_noise", []))) or "none"]
        for r in records
    ]
    headers = ["point", "by", *(f"{key}={v}" for v in values), "chosen", "within noise of it"]
    return tabulate(rows, headers=headers, tablefmt=fmt)


def search_choice(point: str, by: str, values: list[Any], evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """One searched point's record, from the evaluations of its trials (one per value, in the order of `values`):
    {point, by, values: [{value, accuracy (%), ci95}], chosen: the value of the highest accuracy under `by` (the
    first of equals), within_noise: the other values whose difference from it is within noise}."""
    tried, measured = [], []
    for value, evaluation in zip(values, evaluations):
        r = evaluation["eval"][by]
        tried.append({"value": value, "accuracy": r["accuracy"], "ci95": r.get("ci95")})
        measured.append(Measured.of([r]))
    best = max(range(len(tried)), key=lambda i: tried[i]["accuracy"])  # the first of equals: search.values' order
    ties = [
        tried[i]["value"]
        for i in range(len(tried))
        if i != best
        and None not in (measured[i], measured[best])
        and difference(measured[i], measured[best]).within_noise
    ]
    return {"point": point, "by": by, "values": tried, "chosen": tried[best]["value"]} | {"within_noise": ties}


@dataclass(frozen=True)
class AblationTables:
    """What ablate tabulates: `rows`, one per run; `table`, one row per point (its runs' over seeds with
    ablate.seeds, else `rows` themselves), sorted by ablate.sort_by; `accuracies`, {point label: {attack: {accuracy,
    ci95}}} (its metrics); `ties`, the points within noise of the best per attack; `comparisons`, ablate.compare's."""

    rows: list[dict[str, Any]]
    table: list[dict[str, Any]]
    accuracies: dict[str, dict[str, Any]]
    ties: dict[str, dict[str, Any]]
    comparisons: list[dict[str, Any]]


def ablation_tables(
    cfg: AblateParams,
    points: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    per_run: list[Params],
    results: list[tuple[Path, dict[str, Any], dict[str, Any]]],
) -> AblationTables:
    """The tables of `points` from their runs (`runs`, each point at each seed, consecutive; `per_run`, their params;
    `results`, their (run directory, training result, evaluation))."""
    rows = [row_of(point, result, evaluation, run) for point, (run, result, evaluation) in zip(runs, results)]
    evaluations = [evaluation for _, _, evaluation in results]
    table = over_seeds_rows(points, rows, evaluations) if cfg.seeds else rows
    per_point = len(rows) // len(points)
    measured = measured_points(
        [[e["eval"] for e in evaluations[i : i + per_point]] for i in range(0, len(rows), per_point)]
    )
    ties = ties_with_best([point_label(p) for p in points], measured)
    names = [p.get(NAME, "") for p in points]
    pairs = [tuple(pair) for pair in cfg.compare if set(pair) <= set(names)]  # with ablate.only, those it runs
    compared = comparisons(pairs, names, measured)
    attacks = [*dict.fromkeys(a for p in per_run for a in p.eval.attacks), "all_attacks"]
    accuracies = {
        point_label(point): {a: {"accuracy": row[a], "ci95": row.get(f"{a}_ci95")} for a in attacks if a in row}
        for point, row in zip(points, table)
    }
    if cfg.sort_by is not None:
        table.sort(key=lambda r: descending(r.get(cfg.sort_by)))
    return AblationTables(rows, table, accuracies, ties, compared)
