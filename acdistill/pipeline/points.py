"""ablate's points: what each is, where its run lives, what decides it, and what of it is left to do.

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

from acdistill.config import FINETUNE, NAME, POINT_KEYS, Params, fingerprint
from acdistill.errors import AcdistillError
from acdistill.methods import METHODS
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
