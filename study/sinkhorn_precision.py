"""How much GACD's scattering gradient depends on the precision of its Sinkhorn solver, on a trained student.

    python study/sinkhorn_precision.py --student study/ablate/gacd-25308f4c/student.safetensors --n 128

The study trained under bf16 autocast while the solver still ran on the bf16 cost (since fixed: it casts to fp32).
For the first n test images and one uniform start in the eps ball, this prints the OT objective and the cosine
between the gradient with respect to the input and the all-fp32 gradient, for the old path (bf16 features, bf16
solver) and the current one (bf16 features, fp32 solver).
"""

from __future__ import annotations

import argparse

import ot
import torch
import torch.nn.functional as F

from acdistill import load_model
from acdistill.attacks.ot import cosine_cost
from acdistill.data import iterate, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = load_model(args.student).eval()
    x = next(iterate(load_split("cifar10", False, args.n), args.n)).x
    with torch.no_grad():
        clean = net.features(x)
    start = (x + (8 / 255) * torch.empty_like(x).uniform_(-1, 1)).clamp(0, 1)

    def objective_and_grad(autocast: bool, solver_dtype: torch.dtype | None):
        x_adv = start.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            cost = cosine_cost(clean, net.features(x_adv))
            cost = cost.to(solver_dtype) if solver_dtype else cost
            marginal = torch.full((len(cost),), 1.0 / len(cost), dtype=cost.dtype)
            distance = ot.sinkhorn2(marginal, marginal, cost, 0.01, method="sinkhorn_log", numItermax=100, warn=False)
        (grad,) = torch.autograd.grad(distance, x_adv)
        return distance.item(), grad.float().flatten()

    reference_distance, reference = objective_and_grad(False, None)
    print(f"all fp32: OT {reference_distance:.5f}")
    for name, solver_dtype in (
        ("bf16 features, bf16 solver (the study)", None),
        ("bf16 features, fp32 solver (now)", torch.float32),
    ):
        distance, grad = objective_and_grad(True, solver_dtype)
        print(
            f"{name}: OT {distance:.5f}, gradient cosine with all fp32 "
            f"{F.cosine_similarity(grad, reference, dim=0).item():.3f}"
        )


if __name__ == "__main__":
    main()
