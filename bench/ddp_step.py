"""A training step under torchrun's data parallelism: torch's DistributedDataParallel (what the trainer runs) against
the hand-written averaging acdistill ran before (one flat all_reduce of every gradient after the whole backward).

Two processes on this machine, gloo on CPU (nccl on CUDA), each on its half of every global batch; the same model,
method, batch and attack for both paths. Reports the median seconds per step over the timed steps of each path.

    python -m bench.ddp_step --method rslad --model resnet20 --batch-size 128 --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from datetime import date

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from acdistill.budgets import TrainAttack
from acdistill.config import TrainParams
from acdistill.data import Batch, ImageSet
from acdistill.distributed import Ranks
from acdistill.engine import Trainer
from acdistill.methods import METHODS
from acdistill.models import create_model
from acdistill.provenance import cpu_name

WARMUP = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hand_averaged_step(trainer: Trainer, batch: Batch, ranks: Ranks) -> None:
    """The step before DDP: the loss's backward, then every gradient flattened into one all_reduce and divided."""
    x_adv = trainer.method.perturb(batch)
    total = sum(trainer.method.loss(batch, x_adv).values())
    trainer.optimizer.zero_grad(set_to_none=True)
    total.backward()
    grads = [p.grad for p in trainer.params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ranks.world)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))
    trainer.optimizer.step()


def worker(rank: int, world: int, port: int, args, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if args.cuda else torch.device("cpu")
    dist.init_process_group("nccl" if args.cuda else "gloo", rank=rank, world_size=world)
    torch.set_num_threads(args.threads)
    ranks = Ranks(rank, world)
    cfg = TrainParams(
        method=args.method,
        epochs=1,
        batch_size=args.batch_size,
        monitor_n=0,
        attack=TrainAttack(eps=8 / 255, step_size=2 / 255, steps=args.attack_steps),
    )
    torch.manual_seed(0)
    teacher = create_model(args.model).to(device).eval().requires_grad_(False)
    student = create_model(args.model).to(device)
    method = METHODS.get(args.method)(student, teacher, cfg.method_params(), cfg.attack)
    trainer = Trainer(method, cfg, seed=0, device=device, ranks=ranks)
    g = torch.Generator().manual_seed(rank)
    half = args.batch_size // world
    images, labels = (
        torch.randint(0, 256, (half, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (half,), generator=g),
    )
    method.setup(ImageSet("random", images, labels, torch.arange(half), 10, "bench"))  # GACD's bank
    method.to(device)
    trainer.ddp = ranks.data_parallel(student, method, device)
    batch = Batch(images.float().div(255).to(device), labels.to(device), torch.arange(half, device=device))
    timings = {}
    for path, step in (
        ("ddp", lambda: trainer.train_step(batch, share=1.0)),
        ("hand_averaged", lambda: hand_averaged_step(trainer, batch, ranks)),
    ):
        seconds = []
        for i in range(WARMUP + args.steps):
            dist.barrier()
            start = time.perf_counter()
            step()
            if args.cuda:
                torch.cuda.synchronize(device)
            if i >= WARMUP:
                seconds.append(time.perf_counter() - start)
        timings[path] = statistics.median(seconds)
    if rank == 0:
        results.update(timings)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="rslad")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch; each of 2 ranks takes half")
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each path, after 3 untimed ones")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--cuda", action="store_true", help="nccl on two GPUs instead of gloo on the CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = mp.Manager().dict()
    mp.spawn(worker, args=(2, free_port(), args, results), nprocs=2, join=True)
    out = {
        "date": date.today().isoformat(),
        "machine": cpu_name() if not args.cuda else torch.cuda.get_device_name(),
        "backend": "nccl" if args.cuda else "gloo",
        "processes": 2,
        "threads_per_process": args.threads,
        "method": args.method,
        "model": args.model,
        "global_batch": args.batch_size,
        "attack_steps": args.attack_steps,
        "timed_steps": args.steps,
        "seconds_per_step": {k: round(v, 4) for k, v in results.items()},
        "ddp_over_hand_averaged": round(results["ddp"] / results["hand_averaged"], 3),
    }
    print(
        json.dumps(out, indent=2)
        if args.json
        else f"{args.method} {args.model}, global batch {args.batch_size}, 2 {out['backend']} processes: DDP "
        f"{results['ddp']:.3f} s/step, hand-averaged {results['hand_averaged']:.3f} s/step "
        f"({out['ddp_over_hand_averaged']}x)"
    )


if __name__ == "__main__":
    main()
