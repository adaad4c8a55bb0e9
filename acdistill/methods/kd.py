import torch.nn.functional as F
from pydantic import Field

from acdistill.losses import kl_rows
from acdistill.methods.base import Method, ReweightParams, register_method


class KDParams(ReweightParams):
    tau: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)


def soft_kl(teacher_logits, student_logits, tau: float, per_class: bool = False, weight=None):
    """KL(softmax(T/tau) || softmax(S/tau)), summed over classes and averaged over the batch, or with
    `per_class` averaged over batch AND classes (`nn.KLDivLoss()`'s default, which ARD and RSLAD use).
    `weight` [B] multiplies each sample's KL before the average (teacher-confidence reweighting)."""
    kl = kl_rows(teacher_logits, student_logits, tau)
    if weight is not None:
        kl = kl * weight
    return kl.sum() / (student_logits.numel() if per_class else len(student_logits))


@register_method
class KD(Method):
    """Knowledge distillation (Hinton et al. 2015) on clean inputs.

    Loss: alpha * tau^2 * KL(T(x)/tau || S(x)/tau) + (1 - alpha) * CE(S(x), y), KL summed over classes and averaged
    over the batch (`batchmean`, as mdistiller's KD). `reweight: true` weights each sample's KL by p_T(y | x)."""

    name = "kd"
    cuda_graphs = "whole_step"
    Params = KDParams
    needs_teacher = True

    def loss(self, batch, x_adv):
        p = self.params
        logits = self.student(batch.x)
        kl = soft_kl(self.teacher_logits(batch.x), logits, p.tau, weight=self.sample_weight(batch))
        return {"kl": p.alpha * p.tau**2 * kl, "ce": (1 - p.alpha) * F.cross_entropy(logits, batch.y)}
