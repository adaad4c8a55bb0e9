"""GACD's cost: time per distillation step against RSLAD on the same model and batch, the memory banks' size in
float32 and float16 at CIFAR-10 scale (N = 50 000, d = 128), and POT's Sinkhorn against a hand-written one.

    python -m bench.gacd_step --model resnet20 --batch-size 128 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from types import SimpleNamespace

import torch

from acdistill.config import TrainParams
from acdistill.data import ImageSet
from acdistill.methods import Method
from acdistill.provenance import cpu_name
from bench.throughput import bare_step, training_set


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def step_time(name: str, section: dict, args, train_set: ImageSet) -> tuple[float, Method]:
    """RSLAD with its papers' training attack (10 steps of 2/255); GACD with its own 1-step feature scattering."""
    cfg = TrainParams(method=name, batch_size=args.batch_size, **{name: section})
    nets = SimpleNamespace(
        method=name,
        model=args.model,
        teacher=None,
        amp=False,
        channels_last=False,
        cudnn_benchmark=False,
        compile=False,
        cuda_graph=False,
    )
    trainer, step = bare_step(nets, cfg, train_set, torch.device("cpu"))
    return best_time(step, args.repeats), trainer.method


def handwritten_sinkhorn(cost: torch.Tensor, reg: float = 0.01, iters: int = 100) -> torch.Tensor:
    """The alternative to POT that was considered: plain log-domain Sinkhorn iterations, uniform marginals."""
    n, m = cost.shape
    log_a, log_b = torch.full((n,), -math.log(n)), torch.full((m,), -math.log(m))
    f, g = torch.zeros(n), torch.zeros(m)
    for _ in range(iters):
        f = reg * (log_a - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        g = reg * (log_b - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
    return (torch.exp((f[:, None] + g[None, :] - cost) / reg) * cost).sum()


def sinkhorn_times(args) -> dict:
    """Forward + backward of the OT distance between two batches of 64-d features, as the attack computes it."""
    from acdistill.attacks.ot import cosine_cost, sinkhorn_cost

    torch.manual_seed(0)
    a = torch.randn(args.batch_size, 64)
    b = torch.randn(args.batch_size, 64, requires_grad=True)
    return {
        "sinkhorn_pot_s": round(best_time(lambda: sinkhorn_cost(cosine_cost(a, b)).backward(), args.repeats), 4),
        "sinkhorn_handwritten_s": round(
            best_time(lambda: handwritten_sinkhorn(cosine_cost(a, b)).backward(), args.repeats), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bank-size", type=int, default=50_000, help="N, the training-set size the bank holds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    train_set = training_set(args.bank_size)  # the banks' rows: one per training image
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "bank_size": args.bank_size,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }
    result["rslad_step_s"] = round(step_time("rslad", {}, args, train_set)[0], 3)
    for dtype in ("float32", "float16"):
        seconds, method = step_time("gacd", {"bank_dtype": dtype}, args, train_set)
        result[f"gacd_{dtype}_step_s"] = round(seconds, 3)
        bank_bytes = sum(bank.rows.numel() * bank.rows.element_size() for bank in method.banks().values())
        result[f"gacd_{dtype}_bank_mb"] = round(bank_bytes / 2**20, 1)
    result.update(sinkhorn_times(args))
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
