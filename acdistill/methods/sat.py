import torch.nn.functional as F

from acdistill.attacks import ce_objective
from acdistill.methods.base import Method, register_method


@register_method
class SAT(Method):
    """PGD adversarial training (Madry et al. 2018): x' maximizes CE from a uniform random start; loss CE(S(x'), y).

    The attack runs with the student in eval mode, as the TRADES repository's PGD-AT baseline does, so the
    attack's forward passes do not move the BatchNorm running statistics.
    """

    name = "sat"
    cuda_graphs = "whole_step"

    def perturb(self, batch):
        return self.run_attack(lambda: ce_objective(self.student, batch.y), batch.x, "uniform")

    def loss(self, batch, x_adv):
        return {"ce_adv": F.cross_entropy(self.student(x_adv), batch.y)}
