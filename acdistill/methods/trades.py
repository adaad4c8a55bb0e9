import torch
import torch.nn.functional as F
from pydantic import Field

from acdistill.attacks import kl_objective
from acdistill.losses import kl_rows
from acdistill.methods.base import Method, MethodParams, register_method


class TradesParams(MethodParams):
    beta: float = 6.0
    reference_passes: bool = Field(
        True,
        description=(
            "run the student on the clean batch a second time in train mode, after S(x'), as the reference code does: "
            "the pass moves the batch-norm running statistics"
        ),
    )


@register_method
class Trades(Method):
    """TRADES (Zhang et al. 2019, yaodongyu/TRADES `trades_loss`).

    x' maximizes KL(S(x) || S(x')) (summed) from x + 0.001 N(0, 1), student in eval mode;
    loss = CE(S(x), y) + beta * (1/B) * sum_i KL(S(x_i) || S(x'_i)), gradients through both S(x) and S(x').

    The student's passes in train mode are the reference's, in its order: S(x) for CE, S(x'), then S(x) again as
    the KL's target. In train mode each one moves the batch-norm running statistics. The two S(x) are equal (batch
    norm in train mode normalizes by the batch), so the first one serves both terms with its gradient and the
    second runs without one. `reference_passes: false` skips the second.
    """

    name = "trades"
    cuda_graphs = "whole_step"
    Params = TradesParams

    def perturb(self, batch):
        return self.run_attack(lambda: kl_objective(self.student, self.student(batch.x)), batch.x, "normal")

    def loss(self, batch, x_adv):
        logits = self.student(batch.x)
        kl = kl_rows(logits, self.student(x_adv)).mean()
        if self.params.reference_passes:
            with torch.no_grad():
                self.student(batch.x)
        return {"ce": F.cross_entropy(logits, batch.y), "kl_robust": self.params.beta * kl}
