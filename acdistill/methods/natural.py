import torch.nn.functional as F

from acdistill.methods.base import Method, register_method


@register_method
class Natural(Method):
    """Standard training: CE(S(x), y)."""

    name = "natural"
    cuda_graphs = "whole_step"

    def loss(self, batch, x_adv):
        return {"ce": F.cross_entropy(self.student(batch.x), batch.y)}
