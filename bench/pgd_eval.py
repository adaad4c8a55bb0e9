"""PGD-20 evaluation throughput: acdistill's `pgd` against torchattacks.PGD on the same model, batch and budget,
measured side by side in one process (alternating, best of `--repeats`).

    python -m bench.pgd_eval --model resnet20 --batch-size 128 --repeats 3 --json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from acdistill.attacks import ce_objective, pgd
from acdistill.models import create_model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    args = parser.parse_args()

    import torchattacks

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(args.model).to(device).eval()
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    eps, alpha = 8 / 255, 2 / 255
    reference = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
    def ours():
        return pgd(ce_objective(model, y), x, eps=eps, step_size=alpha, steps=args.steps, start="uniform")

    theirs = lambda: reference(x, y)  # noqa: E731
    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(timed(ours))
        t_theirs.append(timed(theirs))
    result = {
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "device": str(device),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "ours_images_per_s": round(args.batch_size / min(t_ours), 1),
        "torchattacks_images_per_s": round(args.batch_size / min(t_theirs), 1),
    }
    result["speedup"] = round(result["ours_images_per_s"] / result["torchattacks_images_per_s"], 3)
    print(json.dumps(result) if args.json else
          f"PGD-{args.steps} on {args.model}, batch {args.batch_size}: ours {result['ours_images_per_s']} img/s, "
          f"torchattacks {result['torchattacks_images_per_s']} img/s ({result['speedup']}x)")


if __name__ == "__main__":
    main()
