import torch.nn.functional as F
from pydantic import Field

from acdistill.attacks import ce_objective
from acdistill.methods.base import Method, ReweightParams, register_method
from acdistill.methods.kd import soft_kl


class ARDParams(ReweightParams):
    tau: float = Field(30.0, gt=0)
    alpha: float = Field(1.0, ge=0, le=1)


@register_method
class ARD(Method):
    """Adversarially robust distillation (Goldblum et al. 2020, goldblum/AdversariallyRobustDistillation).

    x' maximizes CE(S(x'), y) from a uniform start with the student in train mode (as the reference code);
    loss = alpha * tau^2 * KL(T(x)/tau || S(x')/tau) + (1 - alpha) * CE(S(x), y), with the KL averaged over the
    batch AND the classes (the reference's `nn.KLDivLoss()` default). The CE term is left out when alpha = 1.
    `reweight: true` weights each sample's KL by p_T(y | x), the GACD paper's ablation.
    """

    name = "ard"
    step_graph = True
    Params = ARDParams
    needs_teacher = True
    attack_mode = "train"

    def perturb(self, batch):
        return self.run_attack(lambda: ce_objective(self.student, batch.y), batch.x, "uniform")

    def loss(self, batch, x_adv):
        p = self.params
        kl = soft_kl(self.teacher_logits(batch.x), self.student(x_adv), p.tau, per_class=True,
                     weight=self.sample_weight(batch))
        terms = {"kl": p.alpha * p.tau ** 2 * kl}
        if p.alpha < 1:
            terms["ce"] = (1 - p.alpha) * F.cross_entropy(self.student(batch.x), batch.y)
        return terms
