"""Run configs/gpu-quick.yaml end to end on one GPU, through the Python API, and write its table.

It trains the fast-AT teacher and evaluates it, distills and evaluates the RSLAD and GACD students (`ablate`), and
writes <workdir>/results.md: each model's accuracies and each stage's minutes. Run again, it reuses the teacher
(when it was trained with the same settings) and ablate's finished points.

    python scripts/gpu_quick.py [--workdir gpu-quick] [--force] [-S KEY=VALUE ...]

`-S` overrides the preset as the commands' -S does; tests/test_scripts.py runs the script on CPU with a tiny budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import acdistill
from acdistill.checkpoint import read_sidecar
from acdistill.config import Params, parse_override
from acdistill.engine import resolve_device
from acdistill.errors import AcdistillError

PRESET = Path(__file__).resolve().parents[1] / "configs" / "gpu-quick.yaml"


def minutes_of(stage, *args, **kwargs) -> tuple[dict, float]:
    start = time.perf_counter()
    result = stage(*args, **kwargs)
    return result, round((time.perf_counter() - start) / 60, 2)


def run(params: Params, force: bool) -> str:
    teacher = Path("models/teacher.safetensors")
    minutes = {}
    wanted = {"arch": params.teacher.arch, "params": params.teacher.train.model_dump(mode="json")}
    if teacher.exists() and not force:
        sidecar = read_sidecar(teacher)
        if {"arch": sidecar["arch"], "params": sidecar["info"].get("params")} != wanted:
            raise AcdistillError(f"{teacher} was trained with other teacher settings; pass --force to retrain it")
    else:
        _, minutes["teacher"] = minutes_of(acdistill.fetch_teacher, params, out=teacher, force=force)
    evaluation, minutes["teacher evaluation"] = minutes_of(
        acdistill.evaluate_checkpoint, params, model=teacher, out=Path("metrics/eval_teacher.json"), force=True
    )
    info = read_sidecar(teacher)["info"]
    rows = [("teacher", params.teacher.arch, f"{info['method']}, {info['params']['attack']['steps']}-step attack")]
    rows[0] += (info["epochs"], evaluation)
    table, minutes["students (ablate)"] = minutes_of(acdistill.ablate, params, teacher=teacher)
    for point in table["points"]:
        run_dir = Path(point["run"])
        result, trained = (json.loads((run_dir / name).read_text()) for name in ("result.json", "distill.json"))
        rows.append((point["name"], result["student"], result["method"], trained["epochs"], result["eval"]))
        minutes[f"{point['name']} training"] = point["train_minutes"]
    attacks = list(params.eval.attacks)
    lines = [f"| model | arch | method | epochs | {' | '.join(attacks)} |", "|---|---|---|---|" + "---|" * len(attacks)]
    for name, arch, method, epochs, evaluated in rows:
        accuracies = " | ".join(f"{evaluated[a]['accuracy']:.2f}" for a in attacks)
        lines.append(f"| {name} | {arch} | {method} | {epochs} | {accuracies} |")
    lines += ["", "| stage | minutes |", "|---|---|"] + [f"| {k} | {v} |" for k, v in minutes.items()]
    return f"Accuracies in % on the first {params.eval.n} {params.data.dataset} test images.\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--workdir", type=Path, default=Path("gpu-quick"), help="where models/, metrics/ go")
    parser.add_argument("--force", action="store_true", help="retrain the teacher")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="KEY=VALUE over the preset")
    args = parser.parse_args()
    try:
        params = acdistill.load_params(PRESET, dict(map(parse_override, args.overrides)))
        resolve_device(params.device)  # before anything is created
        args.workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(args.workdir)
        text = run(params, args.force) + "\n"
    except AcdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    Path("results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
