"""Where GACD's embeddings collapse: the geometry of a trained GACD run, from its resumable state file.

    python study/gacd_geometry.py --state models/state/distill.pt --student models/student.safetensors \
        --teacher study/models/teacher.safetensors --n 2000

Prints, over the first n training images (clean inputs):
- the mean cosine within and across classes of the raw backbone features, of the same features centered, and of the
  embeddings t = W_t f_T and s = W_s f_S;
- the contrast itself: t . s for the positive pair, for other-class fresh embeddings and for other-class bank rows;
- how far each bank row lags its image's fresh embedding;
- the teacher-anchored NCE split into its positive term and its negatives' term (the expectation over k draws of
  other-class bank rows).

Pass `--embed-bn` for a run trained with `embed_bn: true` (the default since it was added): the embeddings are then
standardized over the n images, where training used each batch. The run must have trained on the first images of
CIFAR-10's training set in order (a `train_subset: N` run), as bank rows are looked up by dataset index. A run
with `negatives: batch` keeps no bank: only the lines on features, embeddings and fresh scores are printed.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from acdistill import load_model
from acdistill.data import iterate, load_split
from acdistill.methods.gacd import critic_log_terms


def within_across(v: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    v = F.normalize(v, dim=1)
    products = v @ v.T
    distinct = ~torch.eye(len(y), dtype=torch.bool)
    return round(products[~other & distinct].mean().item(), 3), round(products[other].mean().item(), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="the run's state.pt (models/state/distill.pt)")
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--embed-bn", action="store_true", help="the run was trained with embed_bn: true")
    parser.add_argument("--k", type=int, default=4096, help="the run's negatives per anchor")
    parser.add_argument("--tau", type=float, default=0.1, help="the run's temperature")
    args = parser.parse_args()
    method = torch.load(args.state, weights_only=True)["method"]
    teacher, student = load_model(args.teacher).eval(), load_model(args.student).eval()
    data = load_split("cifar10", True, args.n)
    x = torch.cat([batch.x for batch in iterate(data, 500)])
    y, other = data.labels, data.labels[:, None] != data.labels[None, :]
    with torch.no_grad():
        f_t, f_s = teacher.features(x), student.features(x)
    t, s = (
        F.linear(f, method[f"{head}.weight"], method[f"{head}.bias"])
        for f, head in ((f_t, "embed_t"), (f_s, "embed_s"))
    )
    if args.embed_bn:
        t, s = (F.batch_norm(v, None, None, training=True) for v in (t, s))
    t, s = F.normalize(t, dim=1), F.normalize(s, dim=1)
    print("mean cosine (within class, across classes):")
    for name, v in (
        ("teacher features", f_t),
        ("teacher features, centered", f_t - f_t.mean(0)),
        ("student features", f_s),
        ("student features, centered", f_s - f_s.mean(0)),
        ("t = normalize(W_t f_T + b)", t),
        ("s = normalize(W_s f_S + b)", s),
    ):
        print(f"  {name}: {within_across(v, y, other)}")
    print(
        f"  |W_t f_T| {F.linear(f_t, method['embed_t.weight']).norm(dim=1).mean():.1f}, "
        f"|W_s f_S| {F.linear(f_s, method['embed_s.weight']).norm(dim=1).mean():.1f}"
    )
    scores = t @ s.T
    print(f"teacher anchors: t.s positive {scores.diag().mean():.3f}, other-class fresh s {scores[other].mean():.3f}")
    if "bank.rows" not in method:
        return
    bank = method["bank.rows"].float()[data.indices]
    print(f"teacher anchors: other-class bank rows {(t @ bank.T)[other].mean():.3f}")
    print(f"bank rows against their image's fresh embedding: student {(s * bank).sum(1).mean():.3f}")
    print(f"log Z (teacher anchors): {method['log_z'].item():.3f}")
    if "teacher_bank.rows" in method:  # symmetric: true
        teacher_bank = method["teacher_bank.rows"].float()[data.indices]
        print(
            f"student anchors: other-class fresh t {scores.T[other].mean():.3f}, other-class teacher-bank rows "
            f"{(s @ teacher_bank.T)[other].mean():.3f}"
        )
        print(f"teacher-bank rows against their image's fresh embedding: {(t * teacher_bank).sum(1).mean():.3f}")
        print(f"log Z (student anchors): {method['log_z_student_anchor'].item():.3f}")

    bank_all = method["bank.rows"].float()
    other_all = y[:, None] != load_split("cifar10", True, len(bank_all)).labels[None, :]
    bank_scores = t @ bank_all.T
    # Every bank row as a negative: the expectation of the k sampled ones' term is k times their mean.
    log_h_pos, log_not_h = critic_log_terms(
        scores.diag(),
        bank_scores,
        tau=args.tau,
        log_z=method["log_z"],
        log_noise=torch.tensor(math.log(args.k / len(bank_all))),
    )
    neg_term = -args.k * (log_not_h * other_all).sum(1) / other_all.sum(1)
    pos_term = -log_h_pos
    hardest = bank_scores.masked_fill(~other_all, -math.inf).max(1).values
    print(
        f"teacher-anchored NCE per anchor, unweighted (k {args.k}): positive term {pos_term.mean():.2f}, "
        f"negatives' term {neg_term.mean():.2f}; highest other-class bank-row score {hardest.mean():.3f}"
    )


if __name__ == "__main__":
    main()
