"""How far the study's teacher is ahead of a student, per attack, paired over the test images both were evaluated on.

Run from study/ after `dvc repro` there:

    python teacher_gap.py --point sat          # the SAT student trained on the study's budget (seed 0)

It reads the teacher's per-image results (metrics/eval_teacher_per_image.json, written by the eval-teacher stage)
and the point's test-split evaluation in ablate/<point>/, and prints teacher - student with Newcombe's paired 95 %
interval (acdistill.stats) for every attack both measured on the same images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from acdistill.stats import paired_difference, unpack_bits


def test_evaluation(run: Path) -> dict:
    evaluations = [json.loads(p.read_text()) for p in sorted(run.glob("eval-*.json"))]
    on_test = [e for e in evaluations if e.get("split") == "test"]
    if not on_test:
        raise SystemExit(f"{run}: no evaluation on the test images")
    return max(on_test, key=lambda e: len(e["eval"]))["eval"]  # the one with the most attacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", default="sat", help="a named point of the study (ablate/<point>)")
    parser.add_argument("--teacher", type=Path, default=Path("metrics/eval_teacher_per_image.json"))
    args = parser.parse_args()
    teacher = json.loads(args.teacher.read_text())
    student = test_evaluation(Path("ablate") / args.point)
    print(f"teacher - {args.point}, percent points (95 % interval, paired over the images)")
    for attack, t in teacher.items():
        s = student.get(attack)
        if s is None or s.get("images") != t["images"]:
            continue
        a, b = unpack_bits(t["correct"], t["n"]), unpack_bits(s["correct"], s["n"])
        gap = paired_difference(a, b)
        print(
            f"{attack:12s} teacher {100 * a.mean():5.1f}  {args.point} {100 * b.mean():5.1f}  "
            f"gap {100 * gap.estimate:+5.1f} ({100 * gap.low:+.1f} to {100 * gap.high:+.1f})  n {t['n']}"
        )


if __name__ == "__main__":
    main()
