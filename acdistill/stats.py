"""95 % intervals for accuracies, and for the difference between two models' accuracies.

An accuracy measured on n test images is a binomial proportion; a model trained at several seeds adds the spread
between seeds. docs/attacks.md ("How sure a number is") states the rules; in short:

- one run, n images: Wilson's score interval (Wilson 1927), which stays inside [0, 1] and keeps its coverage near
  0 % and 100 %, where robust accuracies often lie;
- two runs on the same images: Newcombe's interval for paired proportions (Newcombe 1998, Statistics in Medicine
  17:2635, method 10), from the per-image correctness of both runs; McNemar's exact test gives the p-value;
- two runs on different images: Newcombe's hybrid score interval for independent proportions (Newcombe 1998,
  Statistics in Medicine 17:873, method 10);
- runs at S seeds, each on the same n images: mean ± t · SE, the correctness of image i at seed s read as
  seed effect + image effect + residual (a two-way layout without replication), SE² the sum of its seed, image and
  residual variance components from its mean squares (each truncated at 0), and t with Welch–Satterthwaite's
  degrees of freedom. A difference between two seeded points sums both points' components, the image component
  taken from the per-image differences when both saw the same images.

A difference is *within noise* when its interval contains 0. Every function works in fractions (0.25 is 25 %);
callers print percent. Per-image correctness travels as `pack_bits` strings (one bit an image, base64).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95 % interval, as fractions; `method` names the rule that made it."""

    estimate: float
    low: float
    high: float
    method: str

    @property
    def within_noise(self) -> bool:
        """For a difference: the interval contains 0."""
        return self.low <= 0.0 <= self.high

    def percent(self, digits: int = 2) -> list[float]:
        return [round(100 * self.low, digits), round(100 * self.high, digits)]


def pack_bits(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-image correctness [n] -> base64 of its bits (n / 6 characters): small enough for a results JSON."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(packed: str, n: int) -> np.ndarray:
    """The inverse of `pack_bits`: bool [n]."""
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8), count=n).astype(bool)


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson's score interval for a proportion of `successes` in `n` trials (n >= 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), "wilson")


def paired_difference(a: np.ndarray, b: np.ndarray, z: float = Z95) -> Interval:
    """acc(a) - acc(b) for two runs on the same images (bool [n] each): Newcombe's method 10, which combines the
    two Wilson intervals through the correlation of the runs' per-image results (phi, corrected as Newcombe's
    worked example in Altman et al.'s "Statistics with Confidence" does)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_difference: two runs on the same images, got {a.shape} and {b.shape}")
    n = len(a)
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    w1, w2 = wilson(both + only_a, n, z), wilson(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - only_a * only_b
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(margins)
    d1, e1, d2, e2 = p1 - w1.low, w1.high - p1, p2 - w2.low, w2.high - p2
    low = (p1 - p2) - math.sqrt(max(0.0, d1 * d1 - 2 * phi * d1 * e2 + e2 * e2))
    high = (p1 - p2) + math.sqrt(max(0.0, d2 * d2 - 2 * phi * d2 * e1 + e1 * e1))
    return Interval(p1 - p2, max(-1.0, low), min(1.0, high), "newcombe-paired")


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: the images one run gets right and the other wrong, tested against an even
    split (the binomial test on the discordant pairs)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    m = only_a + only_b
    if m == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return min(1.0, 2 * tail)


def independent_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> Interval:
    """k1/n1 - k2/n2 for runs on different images: Newcombe's hybrid score interval (square-and-add Wilson)."""
    w1, w2 = wilson(k1, n1, z), wilson(k2, n2, z)
    p1, p2 = k1 / n1, k2 / n2
    low = (p1 - p2) - math.hypot(p1 - w1.low, w2.high - p2)
    high = (p1 - p2) + math.hypot(p2 - w2.low, w1.high - p1)
    return Interval(p1 - p2, max(-1.0, low), min(1.0, high), "newcombe-independent")


def t_quantile(df: float) -> float:
    """The t distribution's 97.5 % quantile (Student), for real degrees of freedom >= 1."""
    from scipy.stats import t  # imported here: only seeded intervals need it

    return float(t.ppf(0.975, df))


def _welch(components: list[tuple[float, float]]) -> tuple[float, float]:
    """(the estimate's variance, Welch-Satterthwaite degrees of freedom) from (variance term, its df) pairs; a term
    may be negative (a mean square subtracted), its square still counts."""
    total = sum(v for v, _ in components)
    denominator = sum(v * v / df for v, df in components if df > 0 and v != 0)
    return total, (total * total / denominator if denominator > 0 else math.inf)


@dataclass(frozen=True)
class TwoWay:
    """Mean squares of runs [S, n] (seed s, image i) under y_si = mu + seed_s + image_i + residual_si, the
    two-way layout without replication, and the variance of the grand mean they estimate."""

    seeds: float
    images: float
    residual: float
    n_seeds: int
    n_images: int

    @classmethod
    def of(cls, runs: np.ndarray) -> TwoWay:
        y = np.asarray(runs, dtype=float)
        s, n = y.shape
        by_seed, by_image, grand = y.mean(axis=1), y.mean(axis=0), y.mean()
        residual = y - by_seed[:, None] - by_image[None, :] + grand
        dof_residual = (s - 1) * (n - 1)
        return cls(
            n * float(np.sum((by_seed - grand) ** 2)) / (s - 1),
            s * float(np.sum((by_image - grand) ** 2)) / (n - 1) if n > 1 else 0.0,
            float(np.sum(residual**2)) / dof_residual if dof_residual else 0.0,
            s,
            n,
        )

    def terms(self, images: bool = True) -> list[tuple[float, float]]:
        """(variance term of the grand mean, its df): the seed component (MS_seeds - MS_residual) / (n S), the
        image component (MS_images - MS_residual) / (n S), each truncated at 0 as a variance component must be, and
        the residual MS_residual / (n S). `images` false leaves the image component out (a paired difference
        estimates it from both points at once)."""
        scale = self.n_images * self.n_seeds
        out = [
            (max(self.seeds - self.residual, 0.0) / scale, self.n_seeds - 1),
            (self.residual / scale, (self.n_seeds - 1) * (self.n_images - 1)),
        ]
        if images:
            out.append((max(self.images - self.residual, 0.0) / scale, self.n_images - 1))
        return out


def _interval(estimate: float, components: list[tuple[float, float]], low: float, high: float) -> tuple[float, float]:
    variance, df = _welch(components)
    half = (t_quantile(df) if math.isfinite(df) else Z95) * math.sqrt(max(variance, 0.0))
    return max(low, estimate - half), min(high, estimate + half)


def over_seeds(runs: np.ndarray) -> Interval:
    """The mean accuracy of one point trained at S >= 2 seeds, each run evaluated on the same n images
    (bool [S, n]): mean ± t · SE, SE² the sum of the seed, image and residual components of the two-way layout
    (`TwoWay.terms`), t with Welch-Satterthwaite's degrees of freedom. The interval is at least Wilson's for the S·n
    results pooled (the narrowest they allow: every result independent), so that a point at 0 % on every image and
    seed keeps one."""
    runs = np.asarray(runs, dtype=float)
    if runs.ndim != 2 or runs.shape[0] < 2:
        raise ValueError(f"over_seeds: runs at two or more seeds (bool [S, n]), got shape {runs.shape}")
    mean = float(runs.mean())
    low, high = _interval(mean, TwoWay.of(runs).terms(), 0.0, 1.0)
    pooled = wilson(int(round(runs.sum())), runs.size)
    return Interval(mean, min(low, pooled.low), max(high, pooled.high), "seeds+images")


def seeded_difference(a: np.ndarray, b: np.ndarray, *, paired_images: bool = True) -> Interval:
    """mean acc(a) - mean acc(b) for two points at S_a, S_b >= 2 seeds (bool [S_a, n_a] and [S_b, n_b]), their
    seeds independent: each point's seed and residual components, plus, when both saw the same images
    (`paired_images`, n_a = n_b), the image component of the difference (the variance over images of the per-image
    difference of the seed means, less both points' residual shares, truncated at 0), else each point's own image
    component."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"seeded_difference: two points at two or more seeds, got {a.shape} and {b.shape}")
    if paired_images and a.shape[1] != b.shape[1]:
        raise ValueError(f"seeded_difference: paired images need the same n, got {a.shape[1]} and {b.shape[1]}")
    layouts = TwoWay.of(a), TwoWay.of(b)
    components = [term for layout in layouts for term in layout.terms(images=not paired_images)]
    if paired_images and a.shape[1] > 1:
        n = a.shape[1]
        spread = float(np.var(a.mean(axis=0) - b.mean(axis=0), ddof=1))
        residuals = sum(layout.residual / layout.n_seeds for layout in layouts)
        components.append((max(spread - residuals, 0.0) / n, n - 1))
    diff = float(a.mean() - b.mean())
    return Interval(diff, *_interval(diff, components, -1.0, 1.0), "seeds+images")
