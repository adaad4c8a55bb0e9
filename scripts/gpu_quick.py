"""configs/gpu-quick.yaml end to end on one GPU, through the Python API: train the fast-AT teacher, evaluate it,
distill and evaluate the RSLAD and GACD students (`ablate`), then write <workdir>/results.md with each stage's epochs
and minutes and every accuracy. Finished stages are reused when it is run again (ablate reuses finished points; the
teacher is kept unless --force).

    python scripts/gpu_quick.py [--workdir gpu-quick] [--force] [-S KEY=VALUE ...]

`-S` overrides the preset as the commands' -S does; tests/test_scripts.py runs the script on CPU with a tiny budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import acdistill
from acdistill.config import parse_override

REPO = Path(__file__).resolve().parents[1]


def minutes_of(stage, *args, **kwargs) -> tuple[dict, float]:
    start = time.perf_counter()
    result = stage(*args, **kwargs)
    return result, round((time.perf_counter() - start) / 60, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("gpu-quick"))
    parser.add_argument("--force", action="store_true", help="retrain the teacher")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="KEY=VALUE over the preset")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "configs" / "gpu-quick.yaml", args.workdir / "params.yaml")
    os.chdir(args.workdir)
    params = acdistill.load_params(Path("params.yaml"), dict(map(parse_override, args.overrides)))
    teacher = Path("models/teacher.safetensors")
    rows, minutes = [], {}
    if args.force or not teacher.exists():
        _, minutes["teacher"] = minutes_of(acdistill.fetch_teacher, params, out=teacher, force=args.force)
    teacher_eval, minutes["teacher evaluation"] = minutes_of(
        acdistill.evaluate_checkpoint, params, model=teacher, out=Path("metrics/eval_teacher.json"), force=True
    )
    rows.append(("teacher", params.teacher.arch, "sat (FGSM-RS)", params.teacher.train.epochs, teacher_eval))
    table, minutes["students (ablate)"] = minutes_of(acdistill.ablate, params, teacher=teacher)
    for point in table["points"]:
        run = Path(point["run"])
        result, trained = (json.loads((run / name).read_text()) for name in ("result.json", "distill.json"))
        rows.append((point["name"], result["student"], result["method"], trained["epochs"], result["eval"]))
        minutes[f"{point['name']} training"] = point["train_minutes"]
    attacks = list(params.eval.attacks)
    lines = [
        f"| model | arch | method | epochs | {' | '.join(attacks)} |",
        "|---|---|---|---|" + "---|" * len(attacks),
    ]
    for name, arch, method, epochs, evaluation in rows:
        accuracies = " | ".join(f"{evaluation[a]['accuracy']:.2f}" for a in attacks)
        lines.append(f"| {name} | {arch} | {method} | {epochs} | {accuracies} |")
    lines += ["", "| stage | minutes |", "|---|---|"] + [f"| {k} | {v} |" for k, v in minutes.items()]
    text = f"Accuracies in % on the first {params.eval.n} CIFAR-10 test images.\n\n" + "\n".join(lines) + "\n"
    Path("results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
