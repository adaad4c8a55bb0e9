"""Entropic optimal transport between two batches of features: the distance the feature-scattering attack
(Zhang & Wang 2019) maximizes to build GACD's positives.

Written here rather than taken from POT: POT's `ot.sinkhorn2(method="sinkhorn_log")` agrees with it (to ~1e-4
after 100 iterations, gradients pointing the same way; tests/test_gacd.py checks both against exact OT) but took 0.19 s against 0.15 s here for a 128 x 128 problem, forward and
backward, on the project's 2-core CPU (`python -m bench.gacd_step`, results in BENCHMARKS.md). With reg 0.01 and
costs in [0, 2], exp(-C / reg) underflows float32, so only a log-domain solver works.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cosine_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C_ij = 1 - cos(a_i, b_j), in [0, 2]."""
    return 1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def sinkhorn_cost(cost: torch.Tensor, reg: float = 0.01, iters: int = 100) -> torch.Tensor:
    """<P, C> for the entropic transport plan P between uniform marginals, by log-domain Sinkhorn iterations.
    Differentiable through the iterations, as `ot.sinkhorn2`'s default."""
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(iters):
        f = reg * (log_a - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        g = reg * (log_b - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
    plan = torch.exp((f[:, None] + g[None, :] - cost) / reg)
    return (plan * cost).sum()
