"""Entropic optimal transport between two batches of features: the distance the feature-scattering attack
(Zhang & Wang 2019) maximizes to build GACD's positives. GACD applies it to penultimate features, as the GACD paper
describes its positives; the feature-scattering reference code computes its transport cost on the logits.

The solver is POT's (`ot.sinkhorn2`, log-domain), a maintained library. It is differentiable through its
iterations, it matches exact OT on small problems (tests/test_gacd.py), and it was faster than a hand-written
log-domain loop on a 128 x 128 problem (`python -m bench.gacd_step`, results in BENCHMARKS.md). With reg 0.01 and
costs in [0, 2], exp(-C / reg) underflows float32, so only the log-domain method works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acdistill.losses import float32_math


def cosine_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C_ij = 1 - cos(a_i, b_j), in [0, 2]."""
    return 1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


@float32_math
def sinkhorn_cost(cost: torch.Tensor, reg: float = 0.01, iters: int = 100) -> torch.Tensor:
    """<P, C> for the entropic transport plan P between uniform marginals (at most `iters` Sinkhorn iterations)."""
    import ot

    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)
    # warn=False: a plan that has not met POT's 1e-9 marginal tolerance in 100 iterations is still
    # the plan GACD's attack uses.
    return ot.sinkhorn2(a, b, cost, reg, method="sinkhorn_log", numItermax=iters, warn=False)
