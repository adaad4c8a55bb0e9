import torch
import torch.nn.functional as F
from pydantic import Field

from acdistill.attacks import ce_objective
from acdistill.losses import kl_rows
from acdistill.methods.base import Method, MethodParams, register_method, true_class_probability


class IADParams(MethodParams):
    tau: float = Field(1.0, gt=0, description="distillation temperature (the reference's --temp)")
    beta: float = Field(0.1, gt=0, description="exponent of the teacher's confidence a_i")
    alpha: float = Field(1.0, ge=0, le=1, description="weight of the distillation terms; 1 - alpha weights CE")
    begin: float = Field(
        0.3,
        ge=0,
        le=1,
        description="fraction of the epochs after which introspection starts (60 of 200 in the reference)",
    )
    reference_passes: bool = Field(
        True,
        description=(
            "run the student on the clean batch in train mode as often as the reference code does (once every step, "
            "twice from `begin` on), also where the output is unused: the passes move the batch-norm running "
            "statistics"
        ),
    )


@register_method
class IAD(Method):
    """Introspective adversarial distillation, IAD-I (Zhu et al. 2022, ZFancy/IAD `IAD-I.py`).

    x' maximizes CE(S(x'), y) from a uniform start with the student in train mode. From epoch
    begin * epochs on, with a_i = p_T(y_i | x'_i)^beta (detached):

        loss = alpha tau^2 mean_i KL(T(x_i)/tau || S(x'_i)/tau) + alpha mean_i (1 - a_i) KL(S(x_i) || S(x'_i))
               + (1 - alpha) CE(S(x), y)

    KLs summed over classes and averaged over the batch; the gradient also flows through S(x) in the second term,
    as in the reference. Before `begin` only the first term (and CE) is used.

    The student's passes in train mode are the reference's, in its order: the attack's steps, S(x'), S(x) (every
    step, also before `begin` at alpha = 1, where nothing uses it), and from `begin` on a second S(x), the target
    of the self-KL. In train mode they all move the batch-norm running statistics, so they all run here. The second
    S(x) equals the first (batch norm in train mode normalizes by the batch), so the first one carries the
    gradient and the second runs without one. `reference_passes: false` runs S(x) only once, and only where a
    term uses it.
    """

    name = "iad"
    cuda_graphs = "whole_step"
    Params = IADParams
    needs_teacher = True
    attack_mode = "train"
    introspect = False

    def on_epoch_start(self, epoch, epochs):
        self.introspect = epoch >= round(self.params.begin * epochs)

    def perturb(self, batch):
        return self.run_attack(lambda: ce_objective(self.student, batch.y), batch.x, "uniform")

    def loss(self, batch, x_adv):
        p = self.params
        adv_logits = self.student(x_adv)
        terms = {"kl": p.alpha * p.tau**2 * kl_rows(self.teacher_logits(batch.x), adv_logits, p.tau).mean()}
        clean_logits = None
        if self.introspect or p.alpha < 1:
            clean_logits = self.student(batch.x)
        elif p.reference_passes:
            with torch.no_grad():
                self.student(batch.x)
        if self.introspect:
            with torch.no_grad():
                if p.reference_passes:
                    self.student(batch.x)
                trust = true_class_probability(self.teacher(x_adv), batch.y) ** p.beta
            terms["kl_self"] = p.alpha * ((1 - trust) * kl_rows(clean_logits, adv_logits)).mean()
        if p.alpha < 1:
            terms["ce"] = (1 - p.alpha) * F.cross_entropy(clean_logits, batch.y)
        return terms
