import torch.nn.functional as F

from acdistill.attacks import kl_objective
from acdistill.methods.base import Method, MethodParams, register_method
from acdistill.losses import kl_rows


class TradesParams(MethodParams):
    beta: float = 6.0


@register_method
class Trades(Method):
    """TRADES (Zhang et al. 2019, yaodongyu/TRADES `trades_loss`).

    x' maximizes KL(S(x) || S(x')) (summed) from x + 0.001 N(0, 1), student in eval mode;
    loss = CE(S(x), y) + beta * (1/B) * sum_i KL(S(x_i) || S(x'_i)), gradients through both S(x) and S(x').
    """

    name = "trades"
    step_graph = True
    Params = TradesParams

    def perturb(self, batch):
        return self.run_attack(lambda: kl_objective(self.student, self.student(batch.x)), batch.x, "normal")

    def loss(self, batch, x_adv):
        logits = self.student(batch.x)
        kl = kl_rows(logits, self.student(x_adv)).mean()
        return {"ce": F.cross_entropy(logits, batch.y), "kl_robust": self.params.beta * kl}
