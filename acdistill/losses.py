"""Losses shared by the methods and the training attacks (which cannot import the methods: they import them)."""
import torch.nn.functional as F


def kl_rows(target_logits, logits, tau: float = 1.0):
    """KL(softmax(target/tau) || softmax(logits/tau)) per sample, summed over classes.

    - The target enters as log probabilities: with probabilities, kl_div's gradient for a target that underflows
      to 0 is 0 * -inf = NaN, which killed TRADES (whose target, S(x), takes gradients) once its logits spread by
      ~100 early in training.
    - In float32: CPU autocast runs log_softmax in bfloat16, whose spacing near log(0.1) is 0.016, coarser than
      the whole of ARD's KL at tau 30. The study's bf16 ARD students logged a negative mean KL."""
    return F.kl_div(F.log_softmax(logits.float() / tau, dim=1), F.log_softmax(target_logits.float() / tau, dim=1),
                    reduction="none", log_target=True).sum(dim=1)
