"""ablate's plan: which points it runs (the grid, the explicit points, the search's trials), each run checked before
any starts, where each run lives, what decides it, and what of it is left to do.

A point is a dict of dotted params keys (and the point keys `name`, `adv_finetune`, `search_by`); its run directory,
<runs>/<label>-<hash>/, is named by the hash of what decides its trained student, and holds result.json (its
training) and one eval-<hash>.json per evaluation of that student.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from acdistill.config import FINETUNE, NAME, POINT_KEYS, SEARCH_BY, AblateParams, Params, SearchParams, fingerprint
from acdistill.errors import AcdistillError, warn
from acdistill.methods import METHODS
from acdistill.pipeline.common import check_data
from acdistill.provenance import source_digest

RESULT = "result.json"  # a run's training; each evaluation of it is eval-<hash>.json
STUDENT = "student.safetensors"


def expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the value lists, first key varying slowest (the order the table is read in); an empty grid
    has no points."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []


def with_seeds(points: list[dict[str, Any]], seeds: list[int] | None) -> list[dict[str, Any]]:
    """Each point once per seed, the seed set as a point key: a run's hash and directory are those of the same
    point without `seeds` but with that `seed` in the params, so finished runs are reused either way."""
    return [{**point, "seed": seed} for point in points for seed in seeds] if seeds else points


def point_label(point: dict[str, Any]) -> str:
    if NAME in point:
        return point[NAME] + (f",seed={point['seed']}" if "seed" in point else "")
    return ",".join(f"{k}={v}" for k, v in point.items()) or "base"


def distilled_point(point: dict[str, Any]) -> dict[str, Any]:
    """The point whose distilled student a fine-tuning point starts from: the same point without fine-tuning."""
    return {k: v for k, v in point.items() if k not in (FINETUNE, NAME) and not k.startswith("aft.")}


def without_effect(point: dict[str, Any], p: Params) -> list[str]:
    """The point's keys that its run does not read, `p` being its params: another method's section
    (distill.gacd.* for an rslad point, aft.ard.* when aft.method is sat), or aft.* when it does not fine-tune.
    Points that differ only in these train the same student."""
    unread = []
    for key in point:
        section, _, rest = key.partition(".")
        if section not in ("distill", "aft"):
            continue
        if section == "aft" and not point.get(FINETUNE):
            unread.append(key)
            continue
        method = (p.distill if section == "distill" else p.aft).method
        sub = rest.partition(".")[0]
        if "." in rest and sub in METHODS and sub != method:
            unread.append(key)
    return unread


def point_params(params: Params, point: dict[str, Any]) -> Params:
    """The params of one point: `params`, then ablate.fixed, then the point's values. An error names the point."""
    overrides = {**params.ablate.fixed, **{k: v for k, v in point.items() if k not in POINT_KEYS}}
    return params.with_overrides(overrides, where=f"ablate point {point_label(point)}: ")


def ablation_points(params: Params) -> list[dict[str, Any]]:
    """The points of `params.ablate`, in the table's order: the grid's (`expand`), then the explicit points; with
    ablate.only the points it names alone, in their order in the params. Raises AcdistillError when there are none,
    or when ablate.search has no held-out images (data.val_subset) to choose on."""
    cfg = params.ablate
    if cfg.only is None:
        points = expand(cfg.grid) + cfg.points
    else:  # the named points alone, in their order in the params
        points = [p for p in cfg.points if p.get(NAME) in cfg.only]
    if not points:
        raise AcdistillError("ablate: no points; set ablate.grid or ablate.points in params, or pass --grid KEY=V1,V2")
    if cfg.search is not None and params.data.val_subset is None:
        raise AcdistillError("ablate.search chooses on held-out images: set data.val_subset (e.g. 10000:11000)")
    return points


def check_effect(params: Params, points: list[dict[str, Any]]) -> None:
    """Warn of each grid or points key a point's run does not read (`without_effect`), or with ablate.strict
    refuse, before anything runs: points that differ only in such keys are one run under several labels."""
    unread: dict[str, list[str]] = {}
    for point in points:
        p = point_params(params, point)
        for key in without_effect(point, p):
            section = key.partition(".")[0]
            reader = p.distill.method if section == "distill" else p.aft.method
            why = f"has no effect on {reader}" if section == "distill" or point.get(FINETUNE) else "has no effect"
            if section == "aft" and not point.get(FINETUNE):
                why += f" without {FINETUNE}: true"
            unread.setdefault(f"{key} {why}", []).append(point_label(point))
    if not unread:
        return
    message = "; ".join(f"{what} (points {', '.join(labels)})" for what, labels in unread.items())
    if params.ablate.strict:
        raise AcdistillError(f"ablate: {message} (ablate.strict / --strict refuses it)")
    warn(f"ablate: {message}; points that differ only there train one student (--strict refuses this)")


def checked_runs(params: Params, points: list[dict[str, Any]], data_dir: Path | None) -> list[Params]:
    """The params of every run of `points` (each point at each of ablate.seeds), every run checked before any
    starts (`check_effect`, then the data each reads), the search's at each of its values. Returns the runs' params;
    an AcdistillError names the point."""
    cfg = params.ablate
    check_effect(params, points)
    per_run = [point_params(params, p) for p in with_seeds(points, cfg.seeds)]
    trials = [
        {**point, cfg.search.key: value, "eval.split": "val"}
        for point in (points if cfg.search is not None else [])
        for value in cfg.search.values
    ]
    for point, p in [*zip(with_seeds(points, cfg.seeds), per_run), *((t, point_params(params, t)) for t in trials)]:
        try:
            check_data(p, data_dir, "train")
            check_data(p, data_dir, "eval")
        except AcdistillError as e:
            raise AcdistillError(f"ablate point {point_label(point)}: {e}") from None
    return per_run


def check_sort_by(cfg: AblateParams, points: list[dict[str, Any]], per_run: list[Params]) -> None:
    """ablate.sort_by must name a column of the table: a point key, an attack a run measures, train_minutes or
    all_attacks."""
    columns = (
        {k for p in points for k in p} | {"train_minutes", "all_attacks"} | {a for p in per_run for a in p.eval.attacks}
    )
    if cfg.sort_by is not None and cfg.sort_by not in columns:
        raise AcdistillError(f"ablate: cannot sort by '{cfg.sort_by}'; columns: {', '.join(sorted(columns))}")


def search_base(point: dict[str, Any]) -> str:
    """The label of the distilled point whose search a point takes: fine-tuning points share their distilled
    point's."""
    return point_label({k: v for k, v in distilled_point(point).items() if k != SEARCH_BY})


def search_trials(
    search: SearchParams, points: list[dict[str, Any]], first_seed: int | None
) -> dict[str, dict[str, Any]]:
    """ablate.search's trials of the points that do not set search.key, one search per distilled point
    (`search_base`): {base: {label, by (the attack that chooses), trials (one point per search.values, in their
    order)}}. A trial runs on the held-out images at the first seed; a trial of a named point is named
    <name>.<key's last part>=<value>."""
    short = search.key.rsplit(".", 1)[-1]
    todo: dict[str, dict[str, Any]] = {}
    for point in points:
        if search.key in point or search_base(point) in todo:
            continue
        by = point.get(SEARCH_BY, search.by)
        held_out = {"eval.split": "val", "eval.attacks": search.attacks_for(by), "eval.n": None}
        held_out |= {"eval.n_per_attack": {}} | ({"seed": first_seed} if first_seed is not None else {})
        trials = []
        for value in search.values:
            trial = {k: v for k, v in distilled_point(point).items() if k != SEARCH_BY} | {search.key: value}
            named = {NAME: f"{point[NAME]}.{short}={value}"} if NAME in point else {}
            trials.append(named | trial | held_out)
        todo[search_base(point)] = {"label": point.get(NAME, search_base(point)), "by": by, "trials": trials}
    return todo


def point_dir(
    root: Path, point: dict[str, Any], params: Params, teacher_sha: str | None, train_images: str
) -> tuple[Path, str]:
    """The point's directory and the hash of what decides its trained student: the seed, the data (but the held-out
    images; index files by content, and `train_images`, the digest of the training images themselves:
    `ImageSet.digest`), the distill section (and aft for a fine-tuning point) and the teacher; not the ablate
    section, so that editing the grid leaves the finished points' hashes alone, nor the evaluation."""
    dumped = params.model_dump(mode="json")
    sections = ("seed", "distill", "aft") if point.get(FINETUNE) else ("seed", "distill")
    decided = {k: dumped[k] for k in sections} | {"data": params.data.for_training()}
    digest = fingerprint(decided, teacher_sha256=teacher_sha, train_images=train_images)
    # The same settings reached under another label (a grid key set to its default value) reuse that directory.
    existing = sorted(root.glob(f"*-{digest[:8]}")) if root.is_dir() else []
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", point_label(point))[:80]
    return (existing[0] if existing else root / f"{slug}-{digest[:8]}"), digest


def evaluation_digest(params: Params) -> str:
    """The hash of what decides an evaluation of a trained student: the eval and data sections (index files by
    content) and the seed."""
    dumped = params.model_dump(mode="json")
    return fingerprint({k: dumped[k] for k in ("seed", "eval")} | {"data": params.data.by_content()})


def evaluation_path(run: Path, digest: str) -> Path:
    return run / f"eval-{digest[:8]}.json"


def link_latest(link: Path, run: Path) -> None:
    """runs/<name> -> the named point's run directory, so that later stages can name a path without its hash."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise AcdistillError(f"cannot link {link} to {run.name}: {link} exists and is not a link")
    link.symlink_to(run.name, target_is_directory=True)


def read_result(path: Path, digest: str) -> dict[str, Any] | None:
    """The result at `path` if it was written for `digest`."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("fingerprint") == digest else None


def finished(run: Path, digest: str) -> dict[str, Any] | None:
    """The run's training result, if it trained with these settings."""
    return read_result(run / RESULT, digest)


def has_weights(run: Path) -> bool:
    return (run / STUDENT).is_file() and (run / STUDENT).with_suffix(".json").is_file()


def to_do(run: Path, digest: str, eval_digest: str, need_weights: bool) -> str | None:
    """What a run still needs: "train" (and then evaluate), "evaluate", or None. A run trained before whose weights
    are gone (a clone holds only the small results) trains again only when it must be evaluated anew, or when its
    weights are needed (`need_weights`: a point fine-tunes it, or ablate.keep_weights names it)."""
    if finished(run, digest) is None:
        return "train"
    weights = has_weights(run)
    if read_result(evaluation_path(run, eval_digest), eval_digest) is None:
        return "evaluate" if weights else "train"
    return "train" if need_weights and not weights else None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def other_code(result: dict[str, Any]) -> str | None:
    """The digest of the code that decided a finished result (provenance.source_digest, results_only) when it is not
    this code's ("unrecorded" for results written before acdistill recorded it), else None: an edit to the CLI, the
    tables or the reports leaves finished results as they were."""
    decided = result.get("code", {}).get("results")
    return None if decided == results_digest() else decided or "unrecorded"


def results_digest() -> str:
    return source_digest(results_only=True)
