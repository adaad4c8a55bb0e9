from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from acdistill.attacks import kl_objective
from acdistill.data import ImageSet
from acdistill.errors import AcdistillError
from acdistill.losses import float32_math
from acdistill.methods.base import Method, ReweightParams, register_method, true_class_probability


class CRDNDParams(ReweightParams):
    lam: float = Field(0.2, ge=0, le=1, alias="lambda", description="weight of the natural relation loss")
    tau: float = Field(0.5, gt=0, description="temperature of the relation loss")
    acm: bool = Field(True, description="adaptive compensation module; false uses M = identity (the ablation)")


def noise_matrix(accuracy: torch.Tensor) -> torch.Tensor:
    """ACM's M (k x k): column j holds a_j on the diagonal and (1 - a_j) / (k - 1) elsewhere, so it sums to 1."""
    k = len(accuracy)
    off = (1 - accuracy) / (k - 1)
    return torch.diag(accuracy - off) + off[None, :].expand(k, k)


def relation_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    tau: float,
    weight: torch.Tensor | None = None,
    rows: slice = slice(None),
) -> torch.Tensor:
    """NT-Xent over the 2N items {positive_k} and {anchor_k}: for anchor i the positive is positive_i and the other
    2N - 2 items are negatives; similarity cos / tau. Returns mean_i -log softmax of the positive (weighted by
    `weight` per anchor if given), over the anchors in `rows` (under torchrun, this rank's part of the batch)."""
    n = len(anchor)
    if n < 2:
        raise AcdistillError(f"crdnd: the contrastive relation loss needs batches of at least 2 images, got {n}")
    mine = torch.arange(n, device=anchor.device)[rows]
    a = F.normalize(anchor[mine], dim=1)
    items = F.normalize(torch.cat([positive, anchor]), dim=1)
    logits = a @ items.T / tau  # [rows, 2N]: columns 0..N-1 positives, N..2N-1 anchors
    # Built on the device from device tensors: a host index or value would be a copy in every step, which a
    # captured step (speed.step_graph) cannot hold.
    self_mask = torch.arange(2 * n, device=anchor.device)[None, :] == (n + mine)[:, None]
    log_prob = logits.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    nll = -log_prob[torch.arange(len(mine), device=anchor.device), mine]
    return (nll * weight).mean() if weight is not None else nll.mean()


SPLITS = ("nat", "adv")


@register_method
class CRDND(Method):
    """Contrastive relation denoising distillation (the CRDND paper; its reproduction report, Eqs. 2-8).

    x' as RSLAD: maximize KL(T(x) || S(x')) from x + 0.001 N(0, 1), student in eval mode.
    q = M softmax(S(.)): the student's class probabilities through the ACM noise matrix, M1 on natural inputs and
    M2 on adversarial ones, built from the teacher's per-class accuracy on the previous epoch's natural / adversarial
    training batches (identity before the first epoch ends; set, not learned).
    loss = lambda L(softmax T(x), q(x)) + (1 - lambda) L(softmax T(x'), q(x')), L the relation loss above.
    `reweight: true` weights each anchor by the teacher's probability of its true class on that anchor's input.
    """

    name = "crdnd"
    cuda_graphs = "whole_step"
    Params = CRDNDParams
    needs_teacher = True
    log_only_prefixes = ("acm/",)

    def setup(self, train_set: ImageSet) -> None:
        k = train_set.num_classes
        for split in SPLITS:
            # The teacher's per-class accuracy that M is built from (restored on resume), and this epoch's counts
            # [correct, seen] (an epoch starts them at zero, so they are not saved).
            self.register_buffer(f"accuracy_{split}", torch.ones(k))
            self.register_buffer(f"counts_{split}", torch.zeros(2, k), persistent=False)

    @property
    def accuracy(self) -> dict[str, torch.Tensor]:
        return {split: getattr(self, f"accuracy_{split}") for split in SPLITS}

    @property
    def counts(self) -> dict[str, torch.Tensor]:
        return {split: getattr(self, f"counts_{split}") for split in SPLITS}

    def on_epoch_start(self, epoch, epochs):
        for counts in self.counts.values():
            counts.zero_()

    def on_epoch_end(self):
        """The teacher's per-class accuracy this epoch becomes next epoch's M; every diagonal entry is logged."""
        log = {}
        for split, counts in self.counts.items():
            correct, seen = self.ranks.sum(counts)  # every rank builds the same M from the whole epoch
            measured = seen > 0
            self.accuracy[split][measured] = correct[measured] / seen[measured]
            log.update({f"acm/{split}_diag_{c}": a for c, a in enumerate(self.accuracy[split].tolist())})
        return log

    def perturb(self, batch):
        return self.run_attack(lambda: kl_objective(self.student, self.teacher_logits(batch.x)), batch.x, "normal")

    @float32_math
    def _relation(self, split: str, teacher_logits, student_logits, y) -> torch.Tensor:
        with torch.no_grad():
            correct = (teacher_logits.argmax(1) == y).float()
            self.counts[split][0].index_add_(0, y, correct)
            self.counts[split][1].index_add_(0, y, torch.ones_like(correct))
        probs = F.softmax(student_logits, dim=1)
        if self.params.acm:
            probs = probs @ noise_matrix(self.accuracy[split]).T  # q_i = M p_i
        weight = true_class_probability(teacher_logits, y) if self.params.reweight else None
        # The relation spans the whole batch: gather it from every rank (the student's side with its gradient).
        anchors, start = self.ranks.gather(F.softmax(teacher_logits, dim=1))
        positives, _ = self.ranks.gather(probs, grad=True)
        return relation_loss(anchors, positives, self.params.tau, weight, rows=slice(start, start + len(y)))

    def loss(self, batch, x_adv):
        lam = self.params.lam
        with torch.no_grad():
            teacher_adv = self.teacher(x_adv)
        return {
            "relation_nat": lam * self._relation("nat", self.teacher_logits(batch.x), self.student(batch.x), batch.y),
            "relation_adv": (1 - lam) * self._relation("adv", teacher_adv, self.student(x_adv), batch.y),
        }
