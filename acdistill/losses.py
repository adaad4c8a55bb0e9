"""Losses shared by the methods and the training attacks (which cannot import the methods: they import them), and
the rule that keeps every loss in float32 under mixed precision."""

import contextlib
import functools

import torch
import torch.nn.functional as F


def float32_math(fn):
    """Runs `fn` in float32 whatever autocast is doing: its bfloat16 / float16 tensor arguments are cast up, and
    autocast is off inside, for the devices of its tensor arguments.

    For the loss math of every method: CPU autocast leaves softmax and log_softmax in bfloat16, whose spacing near
    log(0.1) is 0.016, coarser than the whole of ARD's KL at tau 30 (the study's bf16 ARD students logged a negative
    mean KL); a Sinkhorn cost scaled by 1 / 0.01 reaches 200, where bfloat16's spacing is 1; and a contrastive loss
    sums thousands of log-terms of bfloat16 scores. The networks stay in low precision; only what follows them is
    lifted."""

    def to_float32(value):
        low = isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16)
        return value.float() if low else value

    @functools.wraps(fn)
    def run(*args, **kwargs):
        args, kwargs = [to_float32(a) for a in args], {k: to_float32(v) for k, v in kwargs.items()}
        devices = {v.device.type for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)}
        with contextlib.ExitStack() as stack:
            for device in devices:
                stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return run


@float32_math
def kl_rows(target_logits, logits, tau: float = 1.0):
    """KL(softmax(target/tau) || softmax(logits/tau)) per sample, summed over classes.

    The target enters as log probabilities: with probabilities, kl_div's gradient for a target that underflows to 0
    is 0 * -inf = NaN, which killed TRADES (whose target, S(x), takes gradients) once its logits spread by ~100 early
    in training."""
    return F.kl_div(
        F.log_softmax(logits / tau, dim=1), F.log_softmax(target_logits / tau, dim=1), reduction="none", log_target=True
    ).sum(dim=1)
