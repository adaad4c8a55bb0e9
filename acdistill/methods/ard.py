import torch
import torch.nn.functional as F
from pydantic import Field

from acdistill.attacks import ce_objective
from acdistill.methods.base import Method, ReweightParams, register_method
from acdistill.methods.kd import soft_kl


class ARDParams(ReweightParams):
    tau: float = Field(30.0, gt=0)
    alpha: float = Field(1.0, ge=0, le=1)
    reference_passes: bool = Field(
        True,
        description=(
            "run the student on the clean batch in train mode every step, as the reference code does even at "
            "alpha = 1, where the output is unused: the pass moves the batch-norm running statistics"
        ),
    )


@register_method
class ARD(Method):
    """Adversarially robust distillation (Goldblum et al. 2020, goldblum/AdversariallyRobustDistillation).

    x' maximizes CE(S(x'), y) from a uniform start with the student in train mode (as the reference code);
    loss = alpha * tau^2 * KL(T(x)/tau || S(x')/tau) + (1 - alpha) * CE(S(x), y), with the KL averaged over the
    batch AND the classes (the reference's `nn.KLDivLoss()` default). The CE term is left out when alpha = 1.
    `reweight: true` weights each sample's KL by p_T(y | x), the GACD paper's ablation.

    The student's passes in train mode are the reference's, in its order: the attack's steps, S(x'), then S(x).
    The reference computes S(x) every step, also at alpha = 1 where the loss gives it weight 0; in train mode that
    pass still moves the batch-norm running statistics toward clean batches, so it runs here too (without a
    gradient, which would be 0). `reference_passes: false` skips it.
    """

    name = "ard"
    cuda_graphs = "whole_step"
    Params = ARDParams
    needs_teacher = True
    attack_mode = "train"

    def perturb(self, batch):
        return self.run_attack(lambda: ce_objective(self.student, batch.y), batch.x, "uniform")

    def loss(self, batch, x_adv):
        p = self.params
        kl = soft_kl(
            self.teacher_logits(batch.x), self.student(x_adv), p.tau, per_class=True, weight=self.sample_weight(batch)
        )
        terms = {"kl": p.alpha * p.tau**2 * kl}
        if p.alpha < 1:
            terms["ce"] = (1 - p.alpha) * F.cross_entropy(self.student(batch.x), batch.y)
        elif p.reference_passes:
            with torch.no_grad():
                self.student(batch.x)
        return terms
