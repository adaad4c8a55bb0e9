"""PGD-20 evaluation throughput, acdistill against torchattacks, measured side by side in one process.

Raw attack on one batch (alternating, best of `--repeats`), a randomly initialized model:
    python -m bench.pgd_eval --model resnet20 --batch-size 128 --repeats 3 --json
Whole evaluation of a trained checkpoint on the first `--n` test images: `acdistill.evaluate` (attacks only the
clean-correct examples) against the usual torchattacks loop (attack every batch, then count):
    python -m bench.pgd_eval --checkpoint models/teacher.safetensors --n 1000 --batch-size 256 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from acdistill.attacks import ce_objective, pgd
from acdistill.models import create_model
from acdistill.provenance import cpu_name

EPS, ALPHA = 8 / 255, 2 / 255


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def raw_attack(args, device) -> dict:
    import torchattacks

    torch.manual_seed(0)
    model = create_model(args.model).to(device).eval()
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    reference = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=args.steps, random_start=True)

    def ours():
        return pgd(ce_objective(model, y), x, eps=EPS, step_size=ALPHA, steps=args.steps, start="uniform")

    def theirs():
        return reference(x, y)

    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(timed(ours)[0])
        t_theirs.append(timed(theirs)[0])
    return {
        "mode": "raw attack",
        "model": args.model,
        "images": args.batch_size,
        "ours_images_per_s": round(args.batch_size / min(t_ours), 1),
        "torchattacks_images_per_s": round(args.batch_size / min(t_theirs), 1),
    }


def whole_evaluation(args, device) -> dict:
    import torchattacks

    from acdistill import evaluate, load_model
    from acdistill.attacks import Budget
    from acdistill.checkpoint import read_sidecar
    from acdistill.data import iterate, load_split

    model = load_model(args.checkpoint, device).eval()
    dataset = read_sidecar(args.checkpoint).get("dataset", "cifar10")
    data = load_split(dataset, False, args.n, data_dir=args.data_dir)
    reference = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=args.steps, random_start=True)

    def ours():
        result = evaluate(
            model, data, ["pgd20"], budget=Budget(EPS, steps=args.steps), batch_size=args.batch_size, device=device
        )
        return result["pgd20"]["accuracy"]

    def theirs():
        correct = 0
        for batch in iterate(data, args.batch_size, device=device):
            x_adv = reference(batch.x, batch.y)
            with torch.no_grad():
                correct += (model(x_adv).argmax(1) == batch.y).sum().item()
        return round(100.0 * correct / len(data), 2)

    t_ours, acc_ours = timed(ours)
    t_theirs, acc_theirs = timed(theirs)
    return {
        "mode": "whole evaluation",
        "checkpoint": str(args.checkpoint),
        "images": len(data),
        "ours_images_per_s": round(len(data) / t_ours, 1),
        "torchattacks_images_per_s": round(len(data) / t_theirs, 1),
        "ours_accuracy": acc_ours,
        "torchattacks_accuracy": acc_theirs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="architecture for the raw-attack mode")
    parser.add_argument("--checkpoint", help="a trained checkpoint: measure whole evaluations instead")
    parser.add_argument("--n", type=int, default=1000, help="test images for the whole-evaluation mode")
    parser.add_argument("--data-dir", help="offline mirror (default: $ACDISTILL_DATA_DIR)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="raw-attack mode: best of this many")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    args = parser.parse_args()

    device = torch.device(args.device)
    result = whole_evaluation(args, device) if args.checkpoint else raw_attack(args, device)
    result.update(
        {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
        }
    )
    result["speedup"] = round(result["ours_images_per_s"] / result["torchattacks_images_per_s"], 3)
    print(
        json.dumps(result)
        if args.json
        else f"PGD-{args.steps}, {result['mode']}, batch {args.batch_size}: ours {result['ours_images_per_s']} img/s, "
        f"torchattacks {result['torchattacks_images_per_s']} img/s ({result['speedup']}x)"
    )


if __name__ == "__main__":
    main()
