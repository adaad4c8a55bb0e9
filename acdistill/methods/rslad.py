from pydantic import Field

from acdistill.attacks import kl_objective
from acdistill.methods.base import Method, ReweightParams, register_method
from acdistill.methods.kd import soft_kl


class RSLADParams(ReweightParams):
    adv_weight: float = Field(5 / 6, ge=0, le=1)


@register_method
class RSLAD(Method):
    """Robust soft label adversarial distillation (Zi et al. 2021, zibojia/RSLAD).

    x' maximizes KL(T(x) || S(x')) (summed) from x + 0.001 N(0, 1) with the student in eval mode;
    loss = 5/6 KL(T(x) || S(x')) + 1/6 KL(T(x) || S(x)), each KL averaged over batch AND classes
    (the reference's `torch.mean` of the element-wise KLDivLoss). `reweight: true` weights each sample's KLs by
    p_T(y | x).
    """

    name = "rslad"
    cuda_graphs = "whole_step"
    Params = RSLADParams
    needs_teacher = True

    def perturb(self, batch):
        return self.run_attack(lambda: kl_objective(self.student, self.teacher_logits(batch.x)), batch.x, "normal")

    def loss(self, batch, x_adv):
        w = self.params.adv_weight
        t, weight = self.teacher_logits(batch.x), self.sample_weight(batch)
        return {
            "kl_adv": w * soft_kl(t, self.student(x_adv), 1.0, per_class=True, weight=weight),
            "kl_nat": (1 - w) * soft_kl(t, self.student(batch.x), 1.0, per_class=True, weight=weight),
        }
